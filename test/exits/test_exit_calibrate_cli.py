"""`deer-ros calibrate` end to end: a checkpoint the test makes, a slice of the real CALVIN sample."""
import json

import pytest
import torch

from deer_ros.exits.calibration import Calibration, file_sha256
from deer_ros.model.fingerprint import checkpoint_fingerprint
from deer_ros.exits.cli import calibrate_main
from deer_ros.model.checkpoint import save_checkpoint
from deer_ros.model.config import DeerConfig
from deer_ros.model.deer import build_model
from deer_ros.paths import calvin_sample


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    return save_checkpoint(build_model(DeerConfig.preset("tiny")), tmp_path_factory.mktemp("ckpt") / "tiny.pt")


def test_calibrate_writes_a_file_naming_its_model_and_data_and_leaves_the_checkpoint_alone(checkpoint, tmp_path,
                                                                                         capsys):
    before = (file_sha256(checkpoint), checkpoint.stat().st_mtime_ns)
    out = tmp_path / "cal.npz"
    code = calibrate_main(["--checkpoint", str(checkpoint), "--dataset", str(calvin_sample()), "--split",
                           "validation", "--segments", "0,2", "--max-frames", "3", "--criterion",
                           "action_consistency", "--criterion", "feature_cosine", "--out", str(out), "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    cal = Calibration.load(out)
    assert summary["frames"] == cal.n_samples == 6 and summary["criteria"] == list(cal.criteria)
    assert cal.criteria == ("action_consistency", "feature_cosine")
    assert cal.meta["checkpoint"] == str(checkpoint.resolve())
    assert cal.meta["checkpoint_fingerprint"] == checkpoint_fingerprint(checkpoint) and cal.meta["mode"] == "segments"
    assert cal.checkpoint_mismatch(checkpoint) is None
    assert cal.meta["split"] == "validation" and cal.meta["dataset"].endswith("calvin_sample/validation")
    assert (file_sha256(checkpoint), checkpoint.stat().st_mtime_ns) == before


def test_calibrate_refuses_bad_arguments_with_a_reason(checkpoint, tmp_path, capsys):
    assert calibrate_main(["--checkpoint", str(checkpoint), "--out", str(tmp_path / "cal.json")]) == 2
    assert "calibration files are .npz" in capsys.readouterr().err
    assert calibrate_main(["--checkpoint", str(checkpoint), "--dataset", str(tmp_path / "nowhere"),
                           "--out", str(tmp_path / "cal.npz")]) == 1
    assert "CALVIN split folder not found" in capsys.readouterr().err
    assert calibrate_main(["--checkpoint", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "cal.npz")]) == 1
    assert "missing.pt" in capsys.readouterr().err
    assert not (tmp_path / "cal.npz").exists()


def test_calibrate_refuses_a_split_that_contradicts_the_split_folder(checkpoint, tmp_path, capsys):
    validation = calvin_sample() / "validation"
    assert calibrate_main(["--checkpoint", str(checkpoint), "--dataset", str(validation), "--split", "training",
                           "--out", str(tmp_path / "cal.npz")]) == 1
    assert "split 'training' contradicts the dataset folder" in capsys.readouterr().err
    assert not (tmp_path / "cal.npz").exists()


def test_calibrate_reference_mode_defaults_to_the_validation_split_and_the_reference_solver(checkpoint, tmp_path,
                                                                                           capsys):
    out = tmp_path / "ref.npz"
    assert calibrate_main(["--checkpoint", str(checkpoint), "--mode", "reference", "--segments", "0",
                           "--data-percent", "0.2", "--criterion", "action_consistency", "--out", str(out)]) == 0
    cal = Calibration.load(out)
    assert cal.meta["mode"] == "reference" and cal.meta["split"] == "validation"
    assert cal.n_samples == cal.meta["windows"] * 6  # positions 5..10 of each 12-frame window
    assert cal.solver_rule.counting == "floor" and not cal.solver_rule.skip_first_exit  # tiny is not the 9B
