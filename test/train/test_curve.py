"""The accuracy-compute curve: static exits and dynamic budgets, run end to end through `deer-ros train curve`."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from deer_ros.train.cli import train_main
from deer_ros.calvin.replay import ReplayFrame, ReplaySegment
from deer_ros.train.curve import CurvePoint, budgets_between, constant_baseline, static_error_at


def _point(kind: str, gflops: float, error: float) -> CurvePoint:
    return CurvePoint(kind, "", gflops, error, error, error, 1.0, 1.0, {})


def test_budgets_lie_strictly_between_the_first_and_last_exit():
    assert budgets_between(np.array([1.0, 2.0, 5.0]), 3) == [2.0, 3.0, 4.0]


def test_static_error_is_interpolated_between_exits():
    points = [_point("static", 3.0, 0.1), _point("static", 1.0, 0.3), _point("dynamic", 2.0, 0.0)]
    assert static_error_at(points, 2.0) == pytest.approx(0.2)
    assert static_error_at(points, 2.5) == pytest.approx(0.15)


def test_constant_baseline_is_the_rmse_around_the_mean_pose():
    actions = np.zeros((4, 7))
    actions[:, 0] = [1.0, -1.0, 1.0, -1.0]  # mean 0, squared error 1 on one of 6 pose values
    actions[:, 6] = [1, -1, 1, 1]  # the gripper does not count
    def segment(index: int, recorded: np.ndarray) -> ReplaySegment:
        return ReplaySegment(index, "x", [ReplayFrame(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8), a)
                                          for a in recorded])

    assert constant_baseline([segment(0, actions)]) == pytest.approx(np.sqrt(1 / 6))
    shifted = segment(1, actions + np.array([0.5, 0, 0, 0, 0, 0, 0]))
    assert constant_baseline([shifted]) == pytest.approx(np.sqrt(1 / 6))  # a constant offset costs nothing


def test_curve_cli_writes_table_plot_and_json(small_dataset, tmp_path):
    from deer_ros.calvin.dataset import CalvinSplit
    from deer_ros.exits.calibration import collect_calibration, split_segments
    from deer_ros.model.checkpoint import save_checkpoint
    from deer_ros.model.factory import load_policy
    from deer_ros.model.config import DeerConfig
    from deer_ros.model.deer import build_model

    torch.manual_seed(0)
    model = build_model(DeerConfig.preset("tiny"))
    with torch.no_grad():  # open the x-attn gates so the exits disagree and the thresholds matter
        for blk in model.xattn.values():
            blk.attn_gate.fill_(0.6)
            blk.ff_gate.fill_(0.6)
    ckpt = save_checkpoint(model, tmp_path / "m.pt")
    split = CalvinSplit(small_dataset / "training")
    collect_calibration(load_policy(ckpt), split_segments(split)).save(tmp_path / "cal.npz")

    out = tmp_path / "curve"
    assert train_main(["curve", "--checkpoint", str(ckpt), "--calibration", str(tmp_path / "cal.npz"),
                       "--dataset", str(small_dataset), "--split", "training", "--budgets", "2",
                       "--out-dir", str(out), "--name", "c"]) == 0
    assert (out / "c.png").stat().st_size > 10_000
    data = json.loads((out / "c.json").read_text())
    (points,) = data["panels"].values()
    (baseline,) = data["constant_baseline_pose_rmse"].values()
    assert 0.1 < baseline < 0.5  # the real frames' pose spread around their mean
    static = [p for p in points if p["kind"] == "static"]
    dynamic = [p for p in points if p["kind"] == "dynamic"]
    assert [p["mean_layers"] for p in static] == [2, 4, 6]  # tiny: exits after layers 1, 3, 5
    assert [p["exit_histogram"] for p in static] == [{"1": 20}, {"2": 20}, {"3": 20}]
    assert len(dynamic) == 2 and dynamic[0]["budget"] < dynamic[1]["budget"]
    # the calibration's history is the last exit's, the dynamic run's the chosen exits', so the budget is only
    # approximately met even on the same frames; the spent compute must still lie between the extremes and
    # agree with the exits taken
    g = [p["gflops"] for p in static]
    for p in dynamic:
        assert g[0] <= p["gflops"] <= g[-1]
        assert set(p["exit_histogram"]) <= {"1", "2", "3"}
    # a larger budget buys at least as much compute and depth on the same frames
    assert dynamic[0]["gflops"] <= dynamic[1]["gflops"] and dynamic[0]["mean_layers"] <= dynamic[1]["mean_layers"]
    table = (out / "c.md").read_text()
    assert table.count("| static |") == 3 and table.count("| dynamic |") == 2
