"""`deer-ros compare` on a small bag: two budgets, each a real bridge + policy pair over DDS, then table and plot."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("rosbags", reason="needs the bag extra: pip install 'deer_ros[bag]'")
pytest.importorskip("matplotlib", reason="needs the bench extra: pip install 'deer_ros[bench]'")

from deer_ros.compare import compare_main

FRAMES = 12


@pytest.mark.ros
@pytest.mark.slow
def test_compare_two_budgets_on_one_bag_prints_the_table_and_writes_the_plot(tmp_path, one_segment_bag, capsys):
    plot, report = tmp_path / "compare.png", tmp_path / "compare.json"
    code = compare_main([str(one_segment_bag), "--budgets", "0.003,0", "--max-frames", str(FRAMES),
                         "--plot", str(plot), "--report", str(report)])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = json.loads(report.read_text())
    assert result["frames_compared"] == FRAMES
    budgeted, full = result["runs"]
    for run in (budgeted, full):
        assert run["answered"] == run["frames_sent"] == FRAMES and run["unanswered"] == 0
        assert set(run["vs_recorded"]) == {"translation_rmse", "rotation_rmse", "gripper_agreement"}
        assert sum(run["exit_histogram"].values()) == FRAMES
    # Budget 0 runs every exit: it spends the most and is the reference, identical to itself.
    assert full["reference"] and not budgeted["reference"]
    assert full["vs_reference"] == {"translation_rmse": 0.0, "rotation_rmse": 0.0, "gripper_agreement": 1.0}
    assert budgeted["mean_gflops"] < full["mean_gflops"] and budgeted["gflops_saved"] > 0
    table = out.out.splitlines()
    assert f"{FRAMES} frames answered in every run" in table[0]
    assert table[2].split()[:2] == ["0.003", str(FRAMES)] and table[3].endswith("(reference)")
    assert f"plot: {plot}" in out.out


def test_compare_refuses_bad_input_before_starting_any_node(tmp_path, one_segment_bag, capsys):
    assert compare_main([str(one_segment_bag), "--budgets", "0.003"]) == 1
    assert "at least two different budgets" in capsys.readouterr().err
    assert compare_main([str(one_segment_bag), "--budgets", "0.003,0", "--bag-topics", "action=teleop"]) == 1
    assert "['teleop'] not in the bag" in capsys.readouterr().err
    assert compare_main([str(tmp_path / "nowhere"), "--budgets", "0.003,0"]) == 1
    assert "nowhere" in capsys.readouterr().err
