"""`deer-ros calibrate --bag`: the bundled sample split and the bag our converter makes of it give the same
criterion values, hence the same thresholds, in both calibration modes (the bundled demo model, real loading)."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("rosbags", reason="needs the bag extra: pip install 'deer_ros[bag]'")

import numpy as np

from deer_ros.bag.convert import split_to_bag
from deer_ros.exits.calibration import Calibration
from deer_ros.exits.cli import calibrate_main
from deer_ros.exits.criteria import DEFAULT_CRITERION
from deer_ros.exits.solver import budget_range, solve_budget


@pytest.fixture(scope="module")
def sample_bag(tmp_path_factory, validation):
    return split_to_bag(validation, tmp_path_factory.mktemp("bags") / "validation")


def _calibrate(tmp_path, name: str, source: list[str], options: list[str]) -> Calibration:
    out = tmp_path / f"{name}.npz"
    assert calibrate_main([*source, *options, "--out", str(out), "--json"]) == 0
    return Calibration.load(out)


def _assert_identical(a: Calibration, b: Calibration) -> None:
    assert a.criteria == b.criteria and a.n_samples == b.n_samples > 0
    for name in a.criteria:
        np.testing.assert_array_equal(a.values[name], b.values[name])
    np.testing.assert_array_equal(a.exit_gflops, b.exit_gflops)
    np.testing.assert_array_equal(a.segment, b.segment)
    assert a.solver_rule == b.solver_rule
    low, high = budget_range(a.exit_gflops)
    for budget in np.linspace(low, high, 5):
        ta = solve_budget(a.criterion_values(DEFAULT_CRITERION), a.exit_gflops, budget, rule=a.solver_rule)
        tb = solve_budget(b.criterion_values(DEFAULT_CRITERION), b.exit_gflops, budget, rule=b.solver_rule)
        np.testing.assert_array_equal(ta.thresholds, tb.thresholds)


def test_segments_mode_on_a_bag_matches_the_split_it_was_made_from(tmp_path, validation, sample_bag):
    options = ["--max-frames", "3"]  # every segment, its first 3 frames
    split = _calibrate(tmp_path, "split", ["--dataset", str(validation), "--split", "validation"], options)
    bag = _calibrate(tmp_path, "bag", ["--bag", str(sample_bag)], options)
    _assert_identical(split, bag)
    assert len(set(split.segment.tolist())) == 3
    assert bag.meta["dataset"] == str(sample_bag.resolve()) and bag.meta["bag_topics"]["static"] == \
        "camera/static/image_raw" and "action" not in bag.meta["bag_topics"]


def test_reference_mode_on_a_bag_matches_the_split_it_was_made_from(tmp_path, validation, sample_bag):
    options = ["--mode", "reference", "--segments", "0", "--data-percent", "0.05", "--criterion",
               DEFAULT_CRITERION]
    split = _calibrate(tmp_path, "split", ["--dataset", str(validation)], options)
    bag = _calibrate(tmp_path, "bag", ["--bag", str(sample_bag)], options)
    _assert_identical(split, bag)
    assert bag.meta["mode"] == "reference" and bag.meta["windows"] == split.meta["windows"] >= 2


def test_calibrate_bag_options_are_checked_with_a_reason(tmp_path, validation, sample_bag, capsys):
    out = tmp_path / "cal.npz"
    assert calibrate_main(["--bag", str(sample_bag), "--dataset", str(validation), "--out", str(out)]) == 2
    assert "--bag replaces --dataset" in capsys.readouterr().err
    assert calibrate_main(["--bag", str(validation), "--out", str(out)]) == 1
    assert "not a rosbag2 bag" in capsys.readouterr().err
    assert calibrate_main(["--bag", str(sample_bag), "--bag-topics", "front=/cam", "--out", str(out)]) == 1
    assert "ROLE one of static, gripper, instruction, action" in capsys.readouterr().err
    assert calibrate_main(["--bag", str(sample_bag), "--bag-topics", "static=/front/image_raw",
                           "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "['/front/image_raw'] not in the bag" in err and "camera/static/image_raw" in err
    assert calibrate_main(["--dataset", str(validation), "--bag-topics", "action=teleop", "--out", str(out)]) == 1
    assert "is a CALVIN split, not a bag" in capsys.readouterr().err
    assert not out.exists()


def test_an_action_topic_keeps_only_frames_with_an_action_there(tmp_path, sample_bag, capsys):
    out = tmp_path / "cal.npz"
    assert calibrate_main(["--bag", str(sample_bag), "--bag-topics", "action=expert_action", "--segments", "1",
                           "--max-frames", "2", "--criterion", DEFAULT_CRITERION, "--out", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["frames"] == 2
    assert calibrate_main(["--bag", str(sample_bag), "--bag-topics", "action=action", "--out", str(out)]) == 1
    assert "['action'] not in the bag" in capsys.readouterr().err
