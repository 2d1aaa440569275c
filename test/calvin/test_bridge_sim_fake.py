"""The bridge's sim mode as a real rclpy node in this process, driven by a stand-in policy over DDS, with the
FAKE simulator of fake_calvin_env.py in place of calvin_env (which CI cannot install; test_calvin_real_env.py
runs the same paths against the real one). Checks the fault handling and the report, not CALVIN's physics."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from fake_calvin_env import FakeCalvinEnv, FakeTaskOracle

pytestmark = pytest.mark.ros

STATE = {"led": 0, "lightbulb": 1, "slider": "right", "drawer": "closed", "red_block": "table",
         "blue_block": "slider_right", "pink_block": "slider_left", "grasped": 0}
CHAIN = ["open_drawer", "turn_on_led", "move_slider_left", "lift_red_block_table", "stack_block"]
FORWARD = np.array([1.0, 0, 0, 0, 0, 0, 1.0])  # +2 cm per step: the fake oracle sees a task done after 5 steps


@pytest.fixture
def sim_bridge(ros_domain, tmp_path):
    """Factory: a CalvinBridgeNode in mode sim on the fake simulator, spinning in a thread of its own."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter

    from deer_ros.calvin.sim import CalvinSim
    from deer_ros.ros.bridge_node import CalvinBridgeNode

    class FakeSimBridge(CalvinBridgeNode):
        def _make_sim(self, p):
            return CalvinSim(self.split.path, env=FakeCalvinEnv(), task_oracle=FakeTaskOracle())

    sequences = tmp_path / "eval_sequences.json"
    sequences.write_text(json.dumps([[STATE, CHAIN]] * 2))
    made = []

    def make(**params):
        context = rclpy.Context()
        rclpy.init(context=context, domain_id=ros_domain)
        params = {"mode": "sim", "eval_sequences": str(sequences), "report_path": str(tmp_path / "report.json"),
                  "policy_timeout_s": 30.0, **params}
        node = FakeSimBridge(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        threading.Thread(target=executor.spin, daemon=True).start()
        made.append((context, node, executor))
        node.start()
        return node

    def close(node) -> None:
        for context, made_node, executor in made:
            if made_node is node:
                executor.shutdown()
                node.close()
                rclpy.try_shutdown(context=context)

    make.close = close
    yield make
    for _, node, _ in made:
        close(node)


def _report(node) -> dict:
    return json.loads(open(node.get_parameter("report_path").value).read())


def test_a_nan_mid_chain_fails_that_chain_and_the_evaluation_goes_on(sim_bridge, client, tmp_path):
    from deer_ros.ros.client import StandInPolicy

    nan = FORWARD.copy()
    nan[1] = np.nan
    StandInPolicy(client, status_delay_s=0.0, answer=lambda n: nan if n == 7 else FORWARD)
    node = sim_bridge()
    client.spin_until(node.done.is_set, 120, "the evaluation to end")
    report = _report(node)
    assert report["partial"] is False and node.failed is None
    first, second = report["chains"]
    assert [s["success"] for s in first["subtasks"]] == [True, False]
    assert "non-finite" in first["subtasks"][1]["fault"]
    assert second["successes"] == 5 and second["complete"]
    m = report["lh_mtlc"]
    assert m["faults"] == 1 and m["avg_len"] == 3.0 and m["success_rates"]["1"] == 1.0
    assert m["success_rates"]["2"] == 0.5
    assert m["exit_histogram"] == {"1": 5 + 2 + 25} and m["mean_gflops"] == pytest.approx(0.5)
    assert report["settings"]["eval_sequences"].endswith("eval_sequences.json")
    assert report["settings"]["policy_flops_budgets"] == [0.0]  # as the policy's actions reported it
    plot = (tmp_path / "report.svg").read_text()
    assert "average length 3.00" in plot and "complete" in plot and plot.count("<rect") > 5


def test_stopping_mid_chain_writes_a_partial_report_of_what_ran(sim_bridge, client):
    from deer_ros.ros.client import StandInPolicy

    policy = StandInPolicy(client, status_delay_s=0.0, answer=lambda n: FORWARD)
    node = sim_bridge()
    client.spin_until(lambda: len(policy.answered) >= 28, 120, "the first chain and a bit of the second")
    node.stop()  # what SIGINT does first: stop the player, which writes what it has
    report = _report(node)
    assert report["partial"] is True and "interrupted" in report["reason"]
    first, second = report["chains"]
    assert first["complete"] and first["successes"] == 5
    assert not second["complete"] and second["subtasks"] == []  # subtask 1 of chain 2 was cut, not counted
    assert report["lh_mtlc"]["chains"] == 1 and report["lh_mtlc"]["unfinished_chains"] == 1
    env = node.sim.env
    sim_bridge.close(node)  # then the node closes, and with it the simulator
    assert env.closed and node.sim.env is None


def test_max_frames_in_sim_ends_the_run_with_a_partial_report(sim_bridge, client):
    from deer_ros.ros.client import StandInPolicy

    StandInPolicy(client, status_delay_s=0.0, answer=lambda n: FORWARD)
    node = sim_bridge(max_frames=12)
    client.spin_until(node.done.is_set, 120, "the evaluation to end")
    report = _report(node)
    assert report["partial"] is True and "max_frames reached (12 frames)" in report["reason"]
    assert report["bridge"]["frames_sent"] == 12
    assert [s["success"] for s in report["chains"][0]["subtasks"]] == [True, True]


def test_without_eval_sequences_the_standard_chains_are_used(sim_bridge, client, tmp_path, monkeypatch):
    from deer_ros.calvin.protocol import EvalSequence
    from deer_ros.calvin.sequences import STANDARD_COUNT, write_sequences
    from deer_ros.ros.client import StandInPolicy

    # A cache of the standard set, as a first run leaves it (generating it here would take a minute).
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    other = ("turn_on_led", "open_drawer", "rotate_red_block_left", "move_slider_left", "lift_red_block_table")
    write_sequences([EvalSequence(STATE, other)] + [EvalSequence(STATE, tuple(CHAIN))] * (STANDARD_COUNT - 1),
                    tmp_path / "cache" / "deer_ros" / f"calvin_eval_sequences_{STANDARD_COUNT}.json")
    StandInPolicy(client, status_delay_s=0.0, answer=lambda n: FORWARD)
    node = sim_bridge(eval_sequences="", num_chains=1)
    client.spin_until(node.done.is_set, 120, "the evaluation to end")
    report = _report(node)
    assert [c["tasks"] for c in report["chains"]] == [list(other)]
    assert report["settings"]["eval_sequences"] == "CALVIN's standard 1000, generated"
