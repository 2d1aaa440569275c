"""The model folder: converted from released-layout files, relocatable, strict about its parts, and the old
single-file format repacked into it. Small files made here (tiny model), loaded for real."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from deer_ros.exits.calibration import Calibration, calibration_for
from deer_ros.model.checkpoint import is_model_folder, load_folder, open_folder, save_checkpoint
from deer_ros.convert import convert_main
from deer_ros.model.decision import CONTINUE
from deer_ros.model.factory import load_policy
from model_fixtures import tiny_model
from test_checkpoint import assert_same_weights, write_released


@pytest.fixture()
def released(tmp_path):
    """A tiny model written as the released files: DeeR .pth without CLIP or MPT blocks, CLIP, HF MPT."""
    model = tiny_model()
    data = write_released(model, tmp_path)
    args = ["--model", "tiny", "--deer", str(tmp_path / "deer.pth"), "--vision-weights", str(tmp_path / "clip.bin"),
            "--mpt-weights", str(tmp_path / "mpt")]
    return model, args, data


def test_converted_folder_moves_and_loads_from_another_path(tmp_path, released, capsys):
    model, args, _ = released
    assert convert_main(args + ["--out", str(tmp_path / "a" / "deer_tiny")]) == 0
    report = capsys.readouterr().out
    assert "205 of 205 tensors filled" in report and "nothing left over" in report
    moved = tmp_path / "elsewhere" / "renamed"
    moved.parent.mkdir()
    shutil.move(str(tmp_path / "a" / "deer_tiny"), moved)
    shutil.rmtree(tmp_path / "a")
    text = (moved / "config.json").read_text()
    assert str(tmp_path) not in text  # nothing inside points outside the folder
    assert json.loads(text)["config"]["tokenizer"] == "tokenizer"
    policy = load_policy(moved, preset="tiny")
    assert_same_weights(model, policy.model)
    step = policy.step(np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64, 3), np.uint8), "open the drawer",
                       lambda c: CONTINUE)
    assert step.exit_index == 3 and np.isfinite(step.action).all()


def test_conversion_names_the_missing_file(tmp_path, released, capsys):
    _, args, _ = released
    no_mpt = args[:-2]
    assert convert_main(no_mpt + ["--out", str(tmp_path / "m")]) == 1
    assert "blocks <- MPT weights" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()
    assert convert_main(["--model", "of3b", "--fresh-heads", "--out", str(tmp_path / "m")]) == 1
    assert "missing" in capsys.readouterr().err  # nothing given for an of3b model


def test_a_folder_with_a_missing_part_says_which(tmp_path, released):
    _, args, _ = released
    assert convert_main(args + ["--out", str(tmp_path / "m")]) == 0
    shutil.rmtree(tmp_path / "m" / "tokenizer")
    with pytest.raises(FileNotFoundError, match="its tokenizer tokenizer is missing"):
        load_policy(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="its weights model.safetensors is missing"):
        open_folder(tmp_path / "m")


def test_values_cached_in_the_pth_become_the_folders_calibration(tmp_path, released):
    _, args, data = released
    values = torch.rand(3, 40)  # one row per exit, as the reference's eval caches them
    torch.save({**data, "values": values}, tmp_path / "deer.pth")
    assert convert_main(args + ["--out", str(tmp_path / "m")]) == 0
    cal, warning = calibration_for(tmp_path / "m")
    assert warning == "" and cal.meta["mode"] == "reference"
    np.testing.assert_allclose(cal.criterion_values("action_consistency"), values.double().numpy())
    assert cal.solver_rule.counting == "floor"


def test_old_single_file_repacks_into_a_folder_with_its_calibration(tmp_path):
    model = tiny_model(seed=3)
    old = save_checkpoint(model, tmp_path / "old.pt")
    cal = Calibration({"action_consistency": np.random.default_rng(0).random((3, 5))}, [1.0, 2.0, 3.0], [2, 4, 6],
                      np.zeros(5), {"model": "tiny"})
    cal.save(tmp_path / "cal.npz")
    assert load_policy(old).model.n_layers == 6  # the old format still loads
    assert convert_main(["--checkpoint", str(old), "--calibration", str(tmp_path / "cal.npz"),
                         "--out", str(tmp_path / "m")]) == 0
    assert is_model_folder(tmp_path / "m")
    loaded, folder = load_folder(tmp_path / "m", max_exit=2)
    assert loaded.n_layers == 4 and folder.calibration.name == "calibration.npz"
    assert_same_weights(model, load_folder(tmp_path / "m")[0])
    # the calibration is stamped for this folder, and flagged once it is used with another checkpoint
    assert calibration_for(tmp_path / "m")[1] == ""
    other = save_checkpoint(tiny_model(seed=4), tmp_path / "other.pt")
    _, warning = calibration_for(other, tmp_path / "m" / "calibration.npz")
    assert "made for checkpoint" in warning and "re-run `deer-ros calibrate`" in warning
