"""deer_policy under real timing (issue 13): one action per observation, callbacks that never wait for a step,
the instruction handshake (InstructionStatus), stale-stamp reports and budgets above the model's maximum."""
from __future__ import annotations

import signal

import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from lifecycle_msgs.msg import Transition

from deer_ros.msg import InstructionStatus
from deer_ros.ros.client import LATCHED, stamp_key

pytestmark = pytest.mark.ros


def test_a_resent_observation_is_acted_on_once(policy):
    first = policy.act(1.0)
    for i in range(3):  # the bridge re-sends a frame whose action it has not seen (lockstep)
        policy.send_observation(1.0)
        policy.wait_count("repeated_pairs", i + 1)
    assert [stamp_key(a.header.stamp) for a in policy.actions] == [stamp_key(first.header.stamp)]
    policy.act(1.1)
    policy.wait_count("actions", 2)
    assert policy.count("steps") == 2, "the history advanced more than once per observation"


def test_every_applied_instruction_is_announced_with_a_new_sequence(policy):
    first = policy.statuses[-1]
    again = policy.instruct("open the drawer")  # identical text: still a new task, a new history
    other = policy.instruct("push the blue block")
    assert (first.text, again.text, other.text) == ("open the drawer", "open the drawer", "push the blue block")
    assert again.sequence == first.sequence + 1 and other.sequence == first.sequence + 2
    action = policy.act(1.0)
    assert action.header.stamp.sec == 1


def test_callbacks_answer_while_a_step_runs_and_apply_between_steps(launch_node, client):
    """A slow model (the simulated_step_delay_s testing aid holds every step for 6 s): the parameter services,
    the reset service and the instruction callback answer while a step is still running, and what they change
    takes effect between steps: a frame sent for the old instruction is not scored with the new one."""
    launch_node("deer_policy_node", params={"use_sim_time": True, "diagnostics_period_s": 0.2,
                                            "simulated_step_delay_s": 6.0})
    policy = client
    policy.wait_for_policy()
    policy.instruct("open the drawer")
    slow = policy.send_observation(1.0)
    policy.wait_count("steps", 1, timeout=30)  # the model ran; the step now holds for 6 s
    assert policy.action_for(slow) is None
    assert policy.set_parameter("max_exit", 1).successful
    assert policy.get_parameter("max_exit") == 1
    assert policy.reset().success
    old_task = policy.send_observation(2.0)  # a frame of the old task, sent before the new instruction
    policy.spin_for(0.3)
    policy.publish_instruction("close the drawer")
    policy.wait_count("instructions_received", 2)
    assert policy.action_for(slow) is None, "a callback waited for the step to finish"
    # then the step ends, and the worker applies the changes before it takes the next frame
    policy.spin_until(lambda: any(s.text == "close the drawer" for s in policy.statuses), 30,
                            "the new instruction to be applied after the step")
    assert policy.action_for(slow) is not None
    policy.wait_count("pairs_before_instruction", 1)
    assert policy.action_for(old_task) is None, "a frame of the old task was scored with the new instruction"
    action = policy.act(3.0, timeout=40)
    assert action.exit_index == 1, "the max_exit change did not reach the next step"


def test_stamps_from_another_clock_are_reported_with_the_hint(launch_node, client):
    proc = launch_node("deer_policy_node", params={"diagnostics_period_s": 0.2})  # no use_sim_time
    policy = client
    policy.sim_time = False
    policy.wait_for_policy()
    policy.instruct("open the drawer")
    for t in (1.0, 1.1, 1.2):  # sim-time stamps, like a bridge or a bag
        policy.send_observation(t)
        client.spin_for(0.2)
    policy.wait_count("stale_pairs", 1)
    status = policy.wait_status(DiagnosticStatus.OK)  # images do arrive; the drops are in the counters
    assert "use_sim_time:=true" in policy.counts()["last_error"]
    client.spin_until(lambda: "use_sim_time:=true" in proc.output(), 10, "the stale warning in the log")
    assert policy.actions == [] and status is not None


def test_a_budget_above_the_maximum_runs_every_exit_and_below_the_cheapest_is_refused(policy):
    assert policy.set_parameter("flops_budget", 1000).successful  # an integer, as `ros2 param set` sends it
    policy.spin_until(lambda: policy.counts().get("flops_budget_requested") == "1000", 10,
                            "the requested budget in diagnostics")
    assert "every allowed exit runs" in policy.counts()["flops_budget_note"]
    for t in (1.0, 1.1, 1.2):
        action = policy.act(t)
        assert action.exit_index == policy.describe_parameter("max_exit").integer_range[0].to_value  # the last exit
    result = policy.set_parameter("flops_budget", 1e-7)
    assert not result.successful
    assert "flops_budget 1e-07" in result.reason and "GFLOPs" in result.reason and ".." in result.reason
    assert policy.get_parameter("flops_budget") == 1000.0


def test_while_unconfigured_budgets_are_checked_and_reset_says_no_model(launch_node, client):
    launch_node("deer_policy_node", params={"autostart": False, "diagnostics_period_s": 0.2})
    policy = client

    def transition(tid: int) -> None:
        assert policy.change_state(tid)

    reply = policy.reset()
    assert not reply.success and "no model loaded" in reply.message
    before = policy.set_parameter("flops_budget", 0.004)
    assert not before.successful and "configure" in before.reason
    transition(Transition.TRANSITION_CONFIGURE)
    transition(Transition.TRANSITION_CLEANUP)
    refused = policy.set_parameter("flops_budget", 1e-7)
    assert not refused.successful and "flops_budget 1e-07" in refused.reason
    assert policy.set_parameter("flops_budget", 1000.0).successful  # above the maximum: fine for the next configure
    reply = policy.reset()
    assert not reply.success and "no model loaded" in reply.message
    transition(Transition.TRANSITION_CONFIGURE)


@pytest.mark.parametrize("params,reason", [({"max_exit": -3}, "max_exit=-3 is out of range"),
                                           ({"flops_budget": -1.0}, "flops_budget=-1.0 is out of range"),
                                           ({"thresholds": 0.5}, "thresholds must be a list of numbers"),
                                           ({"camera_timeout_s": "soon"}, "camera_timeout_s must be of type")])
def test_start_up_values_out_of_range_give_one_fatal_line(launch_node, params, reason):
    proc = launch_node("deer_policy_node", params=params)
    proc.expected_exit_code = 2
    assert proc.wait(timeout=60) == 2
    out = proc.output()
    fatal = [line for line in out.splitlines() if "FATAL" in line]
    assert len(fatal) == 1 and reason in fatal[0], out
    assert "Traceback" not in out


def test_a_second_ctrl_c_during_shutdown_exits_cleanly(policy):
    policy.act(1.0)
    policy.proc.proc.send_signal(signal.SIGINT)
    policy.proc.proc.send_signal(signal.SIGINT)
    assert policy.proc.stop(signal.SIGINT) == 0
    assert "Traceback" not in policy.proc.output()


def test_the_status_is_latched_for_a_peer_that_joins_late(policy, client):
    late = client.collect(InstructionStatus, "instruction_active", LATCHED)
    client.spin_until(lambda: late, 10, "the latched InstructionStatus")
    assert (late[-1].text, late[-1].sequence) == ("open the drawer", 1)
