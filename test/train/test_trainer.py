"""Training loop, resumable state, the CLI, and the exported reference-layout checkpoint."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from deer_ros.calvin.dataset import CalvinSplit
from deer_ros.exits.controller import FixedExit
from deer_ros.model.checkpoint import export_reference_layout, load_reference, read_file
from deer_ros.model.deer import build_model
from deer_ros.model.policy import DeerPolicy
from deer_ros.train.cli import train_main
from deer_ros.train.data import WindowDataset
from deer_ros.train.losses import multi_exit_loss
from deer_ros.train.trainer import STATE_KEY, StageSettings, Trainer, exit_features, set_trainable

SMALL_RUN = ["--window", "4", "--batch-size", "4", "--lr", "1e-3", "--warmup", "2", "--train-vision",
             "--train-llm", "--threads", "1", "--log-every", "100"]


@pytest.fixture(scope="module")
def small_data(small_dataset, tiny_inputs):
    _, preprocess, prompts = tiny_inputs
    split = CalvinSplit(small_dataset / "training")
    return WindowDataset(split, split.segments(), preprocess, prompts, window=4)


def _model(config, seed=0):
    torch.manual_seed(seed)
    return build_model(config)


def _eval_loss(model, data) -> float:
    """The loss on all windows, unaugmented, with the same exit draws every time (so calls are comparable)."""
    model.eval()
    with torch.no_grad():
        batch = data.batch(list(range(len(data))))
        out = multi_exit_loss(model.head, model.aux_heads, exit_features(model, batch), batch.actions,
                              torch.Generator().manual_seed(123))
    return float(out.total)


def test_training_on_real_frames_decreases_the_loss(small_data, tiny_inputs):
    model = _model(tiny_inputs[0])
    before = _eval_loss(model, small_data)
    trainer = Trainer(model, small_data, StageSettings(epochs=4, batch_size=4, lr=3e-3, warmup_steps=0,
                                                       train_vision=True, train_llm=True, augment=False))
    logs = list(trainer.run())
    assert len(logs) == trainer.total_steps == 4 * 3 and trainer.done
    after = _eval_loss(model, small_data)
    assert after < 0.8 * before, f"loss {before:.4f} -> {after:.4f}"


def test_stages_freeze_the_right_parts(tiny_inputs):
    model = _model(tiny_inputs[0])
    joint = set_trainable(model, StageSettings("joint"))
    parts = {name.split(".")[0] for name in joint}
    assert parts == {"perceiver", "xattn", "wte", "head", "aux_heads"}  # CLIP and MPT blocks frozen by default
    assert {n.split(".")[0] for n in set_trainable(model, StageSettings("joint", train_vision=True,
                                                                         train_llm=True))} >= {"vision", "blocks"}
    assert {n.split(".")[0] for n in set_trainable(model, StageSettings("head"))} == {"head", "aux_heads"}


def test_schedule_warms_up_then_stays_or_decays(small_data, tiny_inputs):
    model = _model(tiny_inputs[0])
    for schedule in ("constant", "cosine"):
        t = Trainer(model, small_data, StageSettings(epochs=4, batch_size=4, warmup_steps=2, schedule=schedule))
        factors = [t.lr_factor(step) for step in range(t.total_steps + 1)]  # 12 steps
        assert factors[:3] == [0.5, 1.0, 1.0]
        if schedule == "constant":
            assert set(factors[2:]) == {1.0}
        else:
            assert all(a > b for a, b in zip(factors[2:], factors[3:])) and factors[-1] == pytest.approx(0.0)
            assert factors[7] == pytest.approx(0.5)  # half-way through the decay
    with pytest.raises(ValueError, match="schedule"):
        StageSettings(schedule="linear")


def test_head_stage_changes_only_the_heads(small_data, tiny_inputs):
    model = _model(tiny_inputs[0])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    Trainer(model, small_data, StageSettings("head", batch_size=4, lr=1e-3, warmup_steps=0)).train_step()
    changed = {k.split(".")[0] for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"head", "aux_heads"}


def test_resumed_training_equals_uninterrupted_training(small_dataset, tmp_path):
    """Two epochs in one go vs one epoch, a saved state, and a resumed run: identical weights and optimiser."""
    common = ["--dataset", str(small_dataset), *SMALL_RUN]
    full, part = tmp_path / "full.pt", tmp_path / "part.pt"
    assert train_main([*common, "--joint-epochs", "2", "--head-epochs", "1", "--out", str(full)]) == 0
    assert train_main([*common, "--joint-epochs", "1", "--out", str(part)]) == 0
    state = read_file(tmp_path / "part.train.pt")
    assert state[STATE_KEY]["step"] == 3 and state[STATE_KEY]["settings"]["stage"] == "joint"
    assert train_main([*common, "--joint-epochs", "2", "--head-epochs", "1", "--out", str(part), "--resume"]) == 0

    a, b = read_file(full), read_file(part)
    assert a["model_state_dict"].keys() == b["model_state_dict"].keys()
    for k, v in a["model_state_dict"].items():
        assert torch.equal(v, b["model_state_dict"][k]), k
    sa, sb = read_file(tmp_path / "full.train.pt")[STATE_KEY], read_file(tmp_path / "part.train.pt")[STATE_KEY]
    assert sa["step"] == sb["step"] == 3 and sa["settings"]["stage"] == "head"
    for pa, pb in zip(sa["optimizer"]["state"].values(), sb["optimizer"]["state"].values()):
        assert torch.equal(pa["exp_avg"], pb["exp_avg"]) and torch.equal(pa["exp_avg_sq"], pb["exp_avg_sq"])
    assert not any(k.startswith("aux_heads.") for k in a["model_state_dict"])  # inference file: no aux heads


def test_calibration_after_training_is_the_one_deer_ros_calibrate_makes(small_dataset, tmp_path):
    from deer_ros.exits.calibration import Calibration
    from deer_ros.exits.cli import calibrate_main

    out = tmp_path / "m.pt"
    assert train_main(["--dataset", str(small_dataset), *SMALL_RUN, "--joint-epochs", "1", "--out", str(out),
                       "--calibrate"]) == 0
    made = Calibration.load(tmp_path / "m_calibration.npz")
    assert calibrate_main(["--checkpoint", str(out), "--dataset", str(small_dataset), "--out",
                           str(tmp_path / "c.npz")]) == 0
    again = Calibration.load(tmp_path / "c.npz")
    assert made.criteria == again.criteria and made.n_samples == again.n_samples > 0
    for name in made.criteria:
        assert np.array_equal(made.values[name], again.values[name]), name
    for key in ("checkpoint", "checkpoint_fingerprint", "dataset", "split", "frames"):
        assert made.meta[key] == again.meta[key], key


def test_cli_refuses_bad_input(small_dataset, tmp_path, capsys):
    assert train_main(["--dataset", str(small_dataset), "--out", str(tmp_path / "x.pt"), "--resume"]) == 1
    assert "no training state" in capsys.readouterr().err
    assert train_main(["--dataset", str(small_dataset), "--out", str(tmp_path / "x.pt")]) == 1  # window 12
    assert "no segment is 12 frames long" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_main(["--out", str(tmp_path / "x.pt"), "--joint-epochs", "0"])
    assert "nothing to train" in capsys.readouterr().err


def test_exported_reference_layout_loads_back_with_identical_actions(tiny_inputs, sample_training, tmp_path):
    from deer_ros.model.factory import load_policy
    from deer_ros.model.tokenizer import load_tokenizer

    config = tiny_inputs[0]
    model = _model(config, seed=3)
    with torch.no_grad():  # open the x-attn gates, so the images matter for the actions compared below
        for blk in model.xattn.values():
            blk.attn_gate.fill_(0.5)
            blk.ff_gate.fill_(0.5)
    path = export_reference_layout(model, tmp_path / "deer.pth", include_vision=True)
    data = read_file(path)
    assert all(k.startswith("module.") for k in data["model_state_dict"])
    assert "module.extra_exit.rnn.layers.0.weight_ih_l0" in data["model_state_dict"]
    loaded = load_reference(path, config=config)
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k

    # the node's loader reads the exported file too, by its reference keys alone
    policies = [DeerPolicy(model, load_tokenizer(config.tokenizer)), load_policy(path, preset="tiny")]
    seg = sample_training.segments()[1]
    for k in (1, len(policies[0].exits)):
        for p in policies:
            p.reset()
        for index in list(seg.frames)[:3]:
            f = sample_training.frame(index, keys=())
            a, b = (p.step(f.rgb_static, f.rgb_gripper, seg.instruction, FixedExit(k)) for p in policies)
            np.testing.assert_array_equal(a.action, b.action)
            assert a.exit_index == b.exit_index == k
