"""The deer_policy executable as a process, driven over DDS by an in-test client node (issue 5)."""
from __future__ import annotations

import signal

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticStatus

from deer_ros.ros.client import TEST_PATTERN
from deer_ros.ros.client import diagnostic_values as _kv
from deer_ros.ros.image import rgb_to_image

STATIC, GRIPPER = TEST_PATTERN["static"], TEST_PATTERN["gripper"]

pytestmark = pytest.mark.ros


def test_actions_are_stamped_with_the_observation_and_carry_exit_bookkeeping(policy):
    action = policy.act(10.0)
    assert (action.header.stamp.sec, action.header.stamp.nanosec) == (10, 0)
    assert action.header.frame_id == "static"
    values = np.concatenate([action.translation, action.rotation])
    assert np.all(np.abs(values) <= 1.0) and action.gripper in (-1.0, 1.0)
    assert action.exit_index >= 1 and action.layers >= 1 and action.gflops > 0 and action.latency_ms > 0


def test_malformed_images_are_refused_and_the_node_keeps_acting(policy):
    policy.act(1.0)
    bad = rgb_to_image(STATIC, Time(sec=2), "static")
    bad.encoding = "16UC1"
    short = rgb_to_image(GRIPPER, Time(sec=2), "gripper")
    short.data = short.data[:-5]
    policy.send_observation(2.0, static=bad, gripper=short)  # neither image is usable: nothing to pair
    policy.wait_count("bad_static_images", 1)  # the node has seen (and refused) both images
    policy.wait_count("bad_gripper_images", 1)
    kv = _kv(policy.status())
    assert "unsupported encoding" in kv["last_error"] or "bytes" in kv["last_error"]
    assert policy.proc.running
    policy.act(3.0)  # and it still acts on good images; steps run in order, so an action for the malformed
    assert policy.action_for(Time(sec=2)) is None, "an action was published for a malformed image"  # pair is here


def test_a_camera_that_stops_gives_error_diagnostics_then_recovers(policy):
    policy.act(1.0)
    policy.wait_status(DiagnosticStatus.OK)
    for i in range(30):  # sim time advances, the gripper camera is silent
        policy.send_observation(Time(sec=2 + i // 10, nanosec=(i % 10) * 100_000_000), gripper=None)
        policy.spin_for(0.05)
    status = policy.wait_status(DiagnosticStatus.ERROR)
    assert "gripper camera silent" in status.message
    n = len(policy.actions)
    policy.act(6.0)
    # steps run in order, so an action for a static image without its gripper image would be here by now
    assert {a.header.stamp.sec for a in policy.actions[n:]} == {6}, "an action without a gripper image"
    policy.wait_status(DiagnosticStatus.OK)


def test_sim_time_jumping_back_clears_history_and_keeps_acting(policy):
    for t in (100.0, 100.1, 100.2):
        policy.act(t)
    action = policy.act(0.5)  # the simulator was reset
    assert action.header.stamp.sec == 0
    policy.spin_until(lambda: int(_kv(policy.status()).get("time_jumps", 0)) >= 1, 10, "a time jump")


def test_empty_instruction_is_refused_and_reset_service_works(policy):
    policy.act(1.0)
    policy.publish_instruction("   ")
    policy.spin_until(lambda: int(_kv(policy.status()).get("empty_instructions", 0)) == 1, 10,
                            "the empty instruction to be counted")
    assert _kv(policy.status())["instruction"] == "open the drawer"
    reply = policy.reset()
    assert reply.success
    policy.act(2.0)


def test_parameter_abuse_is_refused_with_a_reason_and_changes_nothing(policy):
    cases = [("flops_budget", "lots", "Wrong parameter type"), ("flops_budget", -1.0, "out of range"),
             ("max_exit", 1.5, "Wrong parameter type"), ("max_exit", 99, "out of range"),
             ("thresholds", [0.1, float("nan")], "NaN"), ("criterion", "telepathy", ""),
             ("model", "of3b", "read-only"), ("dtype", "int4", "")]
    before = {name: policy.get_parameter(name) for name, _, _ in cases}
    for name, value, reason in cases:
        result = policy.set_parameter(name, value)
        assert not result.successful, f"{name}={value!r} was accepted"
        assert reason in result.reason and result.reason, result.reason
    assert {name: policy.get_parameter(name) for name, _, _ in cases} == before
    policy.act(1.0)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signals_give_a_clean_exit(policy, sig):
    policy.act(1.0)
    assert policy.proc.stop(sig) == 0
    assert "Traceback" not in policy.proc.output()


def test_lifecycle_transitions_gate_the_actions(launch_node, client):
    from lifecycle_msgs.msg import Transition

    launch_node("deer_policy_node", params={"use_sim_time": True, "autostart": False,
                                            "diagnostics_period_s": 0.2})
    node = client.node

    def transition(tid: int) -> None:
        assert client.change_state(tid), f"transition {tid} failed"

    assert client.lifecycle_state() == "unconfigured"
    transition(Transition.TRANSITION_CONFIGURE)  # loads the model
    assert client.lifecycle_state() == "inactive"
    driver = client
    driver.wait_for_policy()
    driver.publish_instruction("open the drawer")
    driver.send_observation(1.0)
    driver.wait_count("pairs", 1)  # the inactive node has the pair (its worker takes a pair within ms)
    transition(Transition.TRANSITION_ACTIVATE)
    driver.act(2.0)  # actions come in step order: one for the t=1 pair would be here by now
    assert driver.action_for(Time(sec=1)) is None, "an inactive node acted on a pair it got while inactive"
    transition(Transition.TRANSITION_DEACTIVATE)
    pairs = driver.count("pairs")
    driver.send_observation(3.0)
    driver.wait_count("pairs", pairs + 1)
    transition(Transition.TRANSITION_ACTIVATE)
    driver.act(4.0)
    assert driver.action_for(Time(sec=3)) is None, "a deactivated node acted on a pair it got while inactive"
    transition(Transition.TRANSITION_DEACTIVATE)
    transition(Transition.TRANSITION_CLEANUP)  # frees the model
    assert client.lifecycle_state() == "unconfigured"
    client.spin_until(lambda: node.count_subscribers("camera/static/image_raw") == 0, 20,
                     "the camera subscriptions to be released by cleanup")
