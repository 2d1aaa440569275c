"""The closed-loop report: what it holds for complete, partial and episode runs, and the files it writes."""
from __future__ import annotations

import json

from deer_ros.calvin.protocol import ChainResult, EvalSequence, SubtaskResult
from deer_ros.calvin.report import EpisodeResult, chains_report, episodes_report, summary_text, write_report

STATE = {"led": 0, "lightbulb": 1, "slider": "right", "drawer": "closed", "red_block": "table",
         "blue_block": "slider_right", "pink_block": "slider_left", "grasped": 0}
TASKS = ("open_drawer", "turn_on_led", "move_slider_left", "lift_red_block_table", "stack_block")


def _results() -> list[ChainResult]:
    done = ChainResult(EvalSequence(STATE, TASKS), [
        SubtaskResult("open_drawer", "pull the handle to open the drawer", True, 4, gflops=8.0, layers=8,
                      exits={1: 2, 2: 2}),
        SubtaskResult("turn_on_led", "press the button to turn on the led light", False, 3, gflops=3.0, layers=3,
                      exits={1: 3}, clipped=2, fault="step 3: refusing a non-finite action")], complete=True)
    cut = ChainResult(EvalSequence(STATE, TASKS), [SubtaskResult("open_drawer", "x", True, 5, exits={2: 5})])
    return [done, cut]


def test_a_partial_report_keeps_every_chain_and_says_why():
    report = chains_report(_results(), {"num_chains": 2}, partial=True, reason="interrupted (SIGINT)")
    assert report["partial"] and report["reason"] == "interrupted (SIGINT)"
    assert [c["complete"] for c in report["chains"]] == [True, False]
    first = report["chains"][0]
    assert first["tasks"] == list(TASKS) and first["successes"] == 1 and first["initial_state"] == STATE
    assert first["subtasks"][1]["fault"].startswith("step 3") and first["subtasks"][1]["clipped_steps"] == 2
    assert first["subtasks"][0]["mean_gflops"] == 2.0 and first["subtasks"][0]["exit_histogram"] == {"1": 2, "2": 2}
    m = report["lh_mtlc"]
    assert m["chains"] == 1 and m["unfinished_chains"] == 1 and m["avg_len"] == 1.0 and m["faults"] == 1
    assert report["settings"] == {"num_chains": 2}
    text = summary_text(report)
    assert text.startswith("PARTIAL (interrupted (SIGINT)): 1 chains: 1/5: 100.0% | 2/5: 0.0%")
    assert "1 faults, 2 clipped steps" in text


def test_write_report_writes_the_json_and_the_plot(tmp_path):
    report = chains_report(_results(), {})
    paths = write_report(report, tmp_path / "out" / "lh_mtlc.json")
    assert [p.name for p in paths] == ["lh_mtlc.json", "lh_mtlc.svg"]
    assert json.loads(paths[0].read_text()) == json.loads(json.dumps(report))
    svg = paths[1].read_text()
    assert svg.startswith("<svg") and "average length 1.00" in svg and "exit 2" in svg
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_episode_report():
    runs = [EpisodeResult(0, 549, SubtaskResult("turn_off_led", "t", True, 30, gflops=30.0, exits={1: 30})),
            EpisodeResult(2, 666, SubtaskResult("lift_blue_block_table", "l", False, 360, exits={1: 360}))]
    report = episodes_report(runs, {})
    assert report["episodes"]["successes"] == 1 and report["episodes"]["success_rate"] == 0.5
    assert report["episodes"]["successful"]["mean_gflops"] == 1.0
    assert [r["start_frame"] for r in report["runs"]] == [549, 666]
    assert summary_text(report).startswith("1/2 episodes solved")
