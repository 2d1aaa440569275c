"""The deer_policy executable as a process, driven over DDS by an in-test probe node (issue 5)."""
from __future__ import annotations

import signal
import time

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import GetParameters, SetParameters
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image
from std_msgs.msg import String
from std_srvs.srv import Trigger

from deer_ros.msg import EndEffectorAction
from deer_ros.ros.image import rgb_to_image

pytestmark = pytest.mark.ros
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
RNG = np.random.default_rng(0)
STATIC = RNG.integers(0, 256, (200, 200, 3), dtype=np.uint8)
GRIPPER = RNG.integers(0, 256, (84, 84, 3), dtype=np.uint8)


class PolicyDriver:
    """Publishes cameras, instruction and /clock to a running deer_policy and collects what it says."""

    def __init__(self, probe, sim_time: bool = True):
        node = probe.node
        self.probe = probe
        self.static = node.create_publisher(Image, "camera/static/image_raw", 10)
        self.gripper = node.create_publisher(Image, "camera/gripper/image_raw", 10)
        self.instruction = node.create_publisher(String, "instruction", LATCHED)
        self.clock = node.create_publisher(Clock, "/clock", 10)
        self.actions = probe.collect(EndEffectorAction, "action")
        self.diagnostics = probe.collect(DiagnosticArray, "/diagnostics")
        self.sim_time = sim_time
        self.set_params = node.create_client(SetParameters, "/deer_policy/set_parameters")
        self.get_params = node.create_client(GetParameters, "/deer_policy/get_parameters")
        self.reset = node.create_client(Trigger, "/deer_policy/reset")
        probe.spin_until(lambda: node.count_subscribers("camera/static/image_raw") > 0, 90,
                         "deer_policy to subscribe to its cameras (model loading)")
        probe.spin_until(lambda: node.count_publishers("action") > 0, 30, "deer_policy to offer `action`")

    def tick(self, t: float, static=STATIC, gripper=GRIPPER) -> Time:
        stamp = Time(sec=int(t), nanosec=int(round((t % 1) * 1e9)))
        if self.sim_time:
            self.clock.publish(Clock(clock=stamp))
        self.static.publish(static if isinstance(static, Image) else rgb_to_image(static, stamp, "static"))
        self.gripper.publish(gripper if isinstance(gripper, Image) else rgb_to_image(gripper, stamp, "gripper"))
        return stamp

    def act(self, t: float, timeout: float = 30.0) -> EndEffectorAction:
        """Send one pair at sim time t and wait for its action, re-sending it every 2 s like the bridge does:
        /clock and the images travel on different topics, so the node may judge a pair against a clock that
        has not caught up yet (stale, or from before the first /clock) and drop it once."""
        key = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stamp = self.tick(t)
            key = (stamp.sec, stamp.nanosec)
            try:
                self.probe.spin_until(lambda key=key: any((a.header.stamp.sec, a.header.stamp.nanosec) == key
                                                  for a in self.actions), 2.0, f"an action for t={t}")
                return next(a for a in self.actions if (a.header.stamp.sec, a.header.stamp.nanosec) == key)
            except TimeoutError:
                continue
        raise TimeoutError(f"no action for t={t} within {timeout:.0f} s")

    def call(self, client, request, timeout: float = 20.0):
        self.probe.spin_until(client.service_is_ready, timeout, f"service {client.srv_name}")
        future = client.call_async(request)
        self.probe.spin_until(future.done, timeout, f"a reply from {client.srv_name}")
        return future.result()

    def set(self, name: str, value):
        msg = ParameterMsg(name=name, value=_value(value))
        return self.call(self.set_params, SetParameters.Request(parameters=[msg])).results[0]

    def get(self, name: str):
        v = self.call(self.get_params, GetParameters.Request(names=[name])).values[0]
        return {ParameterType.PARAMETER_DOUBLE: v.double_value, ParameterType.PARAMETER_INTEGER: v.integer_value,
                ParameterType.PARAMETER_STRING: v.string_value, ParameterType.PARAMETER_BOOL: v.bool_value,
                ParameterType.PARAMETER_DOUBLE_ARRAY: list(v.double_array_value)}.get(v.type)

    def last_status(self) -> DiagnosticStatus | None:
        statuses = [s for d in self.diagnostics for s in d.status if "deer_policy" in s.name]
        return statuses[-1] if statuses else None

    def wait_status(self, level, timeout: float = 20.0) -> DiagnosticStatus:
        start = len(self.diagnostics)
        self.probe.spin_until(lambda: any(s.level == level for d in self.diagnostics[start:] for s in d.status),
                              timeout, f"diagnostics level {level!r}")
        return self.last_status()


def _value(value) -> ParameterValue:
    if isinstance(value, bool):
        return ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=value)
    if isinstance(value, int):
        return ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=value)
    if isinstance(value, float):
        return ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
    if isinstance(value, str):
        return ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
    return ParameterValue(type=ParameterType.PARAMETER_DOUBLE_ARRAY, double_array_value=[float(v) for v in value])


def _kv(status: DiagnosticStatus) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


@pytest.fixture
def policy(launch_node, probe):
    proc = launch_node("deer_policy_node", params={"use_sim_time": True, "camera_timeout_s": 1.0,
                                                   "diagnostics_period_s": 0.2})
    driver = PolicyDriver(probe)
    driver.proc = proc
    driver.instruction.publish(String(data="open the drawer"))
    return driver


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
    n = len(policy.actions)
    policy.tick(2.0, static=bad, gripper=short)  # neither image is usable: nothing to pair
    policy.probe.spin_for(1.5)
    assert len(policy.actions) == n, "an action was published for a malformed image"
    status = policy.last_status()
    kv = _kv(status)
    assert int(kv["bad_static_images"]) >= 1 and int(kv["bad_gripper_images"]) >= 1
    assert "unsupported encoding" in kv["last_error"] or "bytes" in kv["last_error"]
    assert policy.proc.running
    policy.act(3.0)  # and it still acts on good images


def test_a_camera_that_stops_gives_error_diagnostics_then_recovers(policy):
    policy.act(1.0)
    policy.wait_status(DiagnosticStatus.OK)
    for i in range(30):  # sim time advances, the gripper camera is silent
        policy.clock.publish(Clock(clock=Time(sec=2 + i // 10, nanosec=(i % 10) * 100_000_000)))
        policy.static.publish(rgb_to_image(STATIC, Time(sec=2 + i // 10, nanosec=(i % 10) * 100_000_000), "s"))
        policy.probe.spin_for(0.05)
    status = policy.wait_status(DiagnosticStatus.ERROR)
    assert "gripper camera silent" in status.message
    n = len(policy.actions)
    policy.probe.spin_for(0.5)
    assert len(policy.actions) == n
    policy.act(6.0)
    policy.wait_status(DiagnosticStatus.OK)


def test_sim_time_jumping_back_clears_history_and_keeps_acting(policy):
    for t in (100.0, 100.1, 100.2):
        policy.act(t)
    action = policy.act(0.5)  # the simulator was reset
    assert action.header.stamp.sec == 0
    policy.probe.spin_until(lambda: int(_kv(policy.last_status()).get("time_jumps", 0)) >= 1, 10, "a time jump")


def test_empty_instruction_is_refused_and_reset_service_works(policy):
    policy.act(1.0)
    policy.instruction.publish(String(data="   "))
    policy.probe.spin_until(lambda: int(_kv(policy.last_status()).get("empty_instructions", 0)) == 1, 10,
                            "the empty instruction to be counted")
    assert _kv(policy.last_status())["instruction"] == "open the drawer"
    reply = policy.call(policy.reset, Trigger.Request())
    assert reply.success
    policy.act(2.0)


def test_parameter_abuse_is_refused_with_a_reason_and_changes_nothing(policy):
    cases = [("flops_budget", "lots", "must be of type float"), ("flops_budget", -1.0, "out of range"),
             ("max_exit", 1.5, "must be of type int"), ("max_exit", 99, "out of range"),
             ("thresholds", [0.1, float("nan")], "NaN"), ("criterion", "telepathy", ""),
             ("model", "of3b", "read-only"), ("dtype", "int4", "")]
    before = {name: policy.get(name) for name, _, _ in cases}
    for name, value, reason in cases:
        result = policy.set(name, value)
        assert not result.successful, f"{name}={value!r} was accepted"
        assert reason in result.reason and result.reason, result.reason
    assert {name: policy.get(name) for name, _, _ in cases} == before
    policy.act(1.0)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signals_give_a_clean_exit(policy, sig):
    policy.act(1.0)
    assert policy.proc.stop(sig) == 0
    assert "Traceback" not in policy.proc.output()


def test_lifecycle_transitions_gate_the_actions(launch_node, probe):
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState

    launch_node("deer_policy_node", params={"use_sim_time": True, "autostart": False,
                                            "diagnostics_period_s": 0.2})
    node = probe.node
    change = node.create_client(ChangeState, "/deer_policy/change_state")
    get = node.create_client(GetState, "/deer_policy/get_state")
    probe.spin_until(change.service_is_ready, 60, "the lifecycle services")

    def transition(tid: int) -> None:
        future = change.call_async(ChangeState.Request(transition=Transition(id=tid)))
        probe.spin_until(future.done, 60, f"transition {tid}")
        assert future.result().success, f"transition {tid} failed"

    def state() -> str:
        future = get.call_async(GetState.Request())
        probe.spin_until(future.done, 20, "get_state")
        return future.result().current_state.label

    assert state() == "unconfigured"
    transition(Transition.TRANSITION_CONFIGURE)  # loads the model
    assert state() == "inactive"
    driver = PolicyDriver(probe)
    driver.instruction.publish(String(data="open the drawer"))
    driver.tick(1.0)
    probe.spin_for(1.0)
    assert driver.actions == [], "an inactive node published an action"
    transition(Transition.TRANSITION_ACTIVATE)
    driver.act(2.0)
    transition(Transition.TRANSITION_DEACTIVATE)
    n = len(driver.actions)
    driver.tick(3.0)
    probe.spin_for(1.0)
    assert len(driver.actions) == n
    transition(Transition.TRANSITION_CLEANUP)  # frees the model
    assert state() == "unconfigured"
    probe.spin_until(lambda: node.count_subscribers("camera/static/image_raw") == 0, 20,
                     "the camera subscriptions to be released by cleanup")
