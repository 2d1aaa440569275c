"""Open-loop metrics against values worked out by hand."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from deer_ros.calvin.evaluation import OpenLoopEvaluator

# (segment, predicted, recorded, exit_index, layers, gflops)
ROWS = [
    (0, [1, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 1], 1, 2, 2.6),            # dx = 1, gripper agrees
    (0, [0, 0, 0, 0.5, 0, 0, -1], [0, 0, 0, 0, 0, 0, 1], 3, 6, 7.8),         # droll = 0.5, gripper disagrees
    (1, [0, -1, 0, 0, 0, -0.5, -0.2], [0, 1, 0, 0, 0, 0.5, -1], 2, 4, 5.2),  # dy = -2, dyaw = -1, both close
]


@pytest.fixture
def report() -> dict:
    ev = OpenLoopEvaluator()
    for row in ROWS:
        ev.add(*row)
    return ev.to_json(segment_names={0: "open the drawer", 1: "turn on the led"})


def test_overall_metrics(report):
    o = report["overall"]
    assert o["actions"] == 3
    # translation squared errors 1 and 4 over 9 components; absolute 1 and 2
    assert o["translation_rmse"] == pytest.approx(math.sqrt(5 / 9))
    assert o["translation_mae"] == pytest.approx(3 / 9)
    assert o["translation_rmse_m"] == pytest.approx(math.sqrt(5 / 9) * 0.02)
    assert o["translation_mae_m"] == pytest.approx(3 / 9 * 0.02)
    # rotation squared errors 0.25 and 1 over 9; absolute 0.5 and 1
    assert o["rotation_rmse"] == pytest.approx(math.sqrt(1.25 / 9))
    assert o["rotation_mae"] == pytest.approx(1.5 / 9)
    assert o["rotation_rmse_rad"] == pytest.approx(math.sqrt(1.25 / 9) * 0.05)
    assert o["rotation_mae_rad"] == pytest.approx(1.5 / 9 * 0.05)
    assert o["gripper_agreement"] == pytest.approx(2 / 3)
    assert o["exit_histogram"] == {"1": 1, "2": 1, "3": 1}
    assert o["mean_exit"] == pytest.approx(2.0)
    assert o["mean_layers"] == pytest.approx(4.0)
    assert o["mean_gflops"] == pytest.approx(5.2)


def test_per_segment_metrics(report):
    s0, s1 = report["segments"]["0"], report["segments"]["1"]
    assert (s0["name"], s0["actions"], s1["name"], s1["actions"]) == ("open the drawer", 2, "turn on the led", 1)
    assert s0["translation_rmse"] == pytest.approx(math.sqrt(1 / 6))
    assert s0["translation_mae"] == pytest.approx(1 / 6)
    assert s0["rotation_rmse"] == pytest.approx(math.sqrt(0.25 / 6))
    assert s0["gripper_agreement"] == pytest.approx(0.5)
    assert s0["exit_histogram"] == {"1": 1, "3": 1}
    assert s0["mean_gflops"] == pytest.approx(5.2)
    assert s1["translation_rmse"] == pytest.approx(math.sqrt(4 / 3))
    assert s1["rotation_mae"] == pytest.approx(1 / 3)
    assert s1["gripper_agreement"] == 1.0
    assert s1["mean_layers"] == 4.0


def test_perfect_actions_have_zero_error():
    ev = OpenLoopEvaluator()
    action = np.array([0.3, -0.2, 0.1, 0.05, 0.0, -0.4, -1.0], np.float32)
    ev.add(4, action, action, 1, 2, 2.6)
    o = ev.to_json()["overall"]
    assert o["translation_rmse"] == o["rotation_mae"] == 0.0 and o["gripper_agreement"] == 1.0
    assert "name" not in ev.to_json()["segments"]["4"]


def test_json_file_round_trip(tmp_path, report):
    ev = OpenLoopEvaluator()
    for row in ROWS:
        ev.add(*row)
    path = ev.write(tmp_path / "out" / "eval.json", {0: "open the drawer", 1: "turn on the led"})
    assert json.loads(path.read_text()) == report


def test_empty_evaluator():
    assert OpenLoopEvaluator().to_json() == {"overall": {"actions": 0}, "segments": {}}


@pytest.mark.parametrize("predicted, exit_index, layers, gflops, message", [
    ([0] * 6, 1, 2, 1.0, "must have 7 values"),
    ([0] * 6 + [float("nan")], 1, 2, 1.0, "NaN or Inf"),
    ([0] * 7, 0, 2, 1.0, "exit_index=0"),
    ([0] * 7, 1, 0, 1.0, "layers=0"),
    ([0] * 7, 1, 2, float("inf"), "gflops=inf"),
])
def test_bad_records_are_refused(predicted, exit_index, layers, gflops, message):
    ev = OpenLoopEvaluator()
    with pytest.raises(ValueError, match=message):
        ev.add(0, predicted, [0] * 7, exit_index, layers, gflops)
    assert len(ev) == 0
