"""Drives a running deer_policy process over DDS from the test's probe node (shared by the test/ros tests)."""
from __future__ import annotations

import time

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import DescribeParameters, GetParameters, SetParameters, SetParametersAtomically
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image
from std_msgs.msg import String
from std_srvs.srv import Trigger

from deer_ros.msg import EndEffectorAction, InstructionStatus
from deer_ros.ros.image import rgb_to_image

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
RNG = np.random.default_rng(0)
STATIC = RNG.integers(0, 256, (200, 200, 3), dtype=np.uint8)
GRIPPER = RNG.integers(0, 256, (84, 84, 3), dtype=np.uint8)


def key(stamp) -> tuple[int, int]:
    return stamp.sec, stamp.nanosec


def sim_time(t: float) -> Time:
    return Time(sec=int(t), nanosec=int(round((t % 1) * 1e9)))


class PolicyDriver:
    """Publishes cameras, instruction and /clock to a running deer_policy and collects what it says."""

    def __init__(self, probe, sim_time: bool = True, node_name: str = "/deer_policy", wait: bool = True):
        node = probe.node
        self.probe = probe
        self.static = node.create_publisher(Image, "camera/static/image_raw", 10)
        self.gripper = node.create_publisher(Image, "camera/gripper/image_raw", 10)
        self.instruction = node.create_publisher(String, "instruction", LATCHED)
        self.clock = node.create_publisher(Clock, "/clock", 10)
        self.actions = probe.collect(EndEffectorAction, "action")
        self.diagnostics = probe.collect(DiagnosticArray, "/diagnostics")
        self.statuses = probe.collect(InstructionStatus, "instruction_active", LATCHED)
        self.sim_time = sim_time
        self.set_params = node.create_client(SetParameters, f"{node_name}/set_parameters")
        self.set_atomic = node.create_client(SetParametersAtomically, f"{node_name}/set_parameters_atomically")
        self.get_params = node.create_client(GetParameters, f"{node_name}/get_parameters")
        self.describe_params = node.create_client(DescribeParameters, f"{node_name}/describe_parameters")
        self.reset = node.create_client(Trigger, f"{node_name}/reset")
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        node = self.probe.node
        self.probe.spin_until(lambda: node.count_subscribers("camera/static/image_raw") > 0, 90,
                              "deer_policy to subscribe to its cameras (model loading)")
        self.probe.spin_until(lambda: node.count_publishers("action") > 0, 30, "deer_policy to offer `action`")

    def tick(self, t: float, static=STATIC, gripper=GRIPPER, clock: bool = True) -> Time:
        stamp = sim_time(t)
        if self.sim_time and clock:
            self.clock.publish(Clock(clock=stamp))
        self.static.publish(static if isinstance(static, Image) else rgb_to_image(static, stamp, "static"))
        self.gripper.publish(gripper if isinstance(gripper, Image) else rgb_to_image(gripper, stamp, "gripper"))
        return stamp

    def action_for(self, stamp: Time) -> EndEffectorAction | None:
        return next((a for a in self.actions if key(a.header.stamp) == key(stamp)), None)

    def act(self, t: float, timeout: float = 30.0, **images) -> EndEffectorAction:
        """Send one pair at sim time t and wait for its action, re-sending it every 2 s like the bridge does:
        /clock and the images travel on different topics, so the node may judge a pair against a clock that
        has not caught up yet (stale, or from before the first /clock) and drop it once."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stamp = self.tick(t, **images)
            try:
                self.probe.spin_until(lambda stamp=stamp: self.action_for(stamp) is not None, 2.0,
                                      f"an action for t={t}")
                return self.action_for(stamp)
            except TimeoutError:
                continue
        raise TimeoutError(f"no action for t={t} within {timeout:.0f} s")

    def call(self, client, request, timeout: float = 20.0):
        return self.call_async(client, request, timeout).result()

    def call_async(self, client, request, timeout: float = 20.0):
        """Send a request and spin until its reply is in; returns the future."""
        self.probe.spin_until(client.service_is_ready, timeout, f"service {client.srv_name}")
        future = client.call_async(request)
        self.probe.spin_until(future.done, timeout, f"a reply from {client.srv_name}")
        return future

    def set(self, name: str, value):
        return self.set_raw(ParameterMsg(name=name, value=parameter_value(value)))

    def set_raw(self, msg: ParameterMsg):
        return self.call(self.set_params, SetParameters.Request(parameters=[msg])).results[0]

    def set_atomically(self, values: dict):
        msgs = [ParameterMsg(name=n, value=parameter_value(v)) for n, v in values.items()]
        return self.call(self.set_atomic, SetParametersAtomically.Request(parameters=msgs)).result

    def get(self, name: str):
        v = self.call(self.get_params, GetParameters.Request(names=[name])).values[0]
        return {ParameterType.PARAMETER_DOUBLE: v.double_value, ParameterType.PARAMETER_INTEGER: v.integer_value,
                ParameterType.PARAMETER_STRING: v.string_value, ParameterType.PARAMETER_BOOL: v.bool_value,
                ParameterType.PARAMETER_DOUBLE_ARRAY: list(v.double_array_value)}.get(v.type)

    def describe(self, name: str):
        return self.call(self.describe_params, DescribeParameters.Request(names=[name])).descriptors[0]

    def last_status(self) -> DiagnosticStatus | None:
        statuses = [s for d in self.diagnostics for s in d.status if "deer_policy" in s.name]
        return statuses[-1] if statuses else None

    def counts(self) -> dict[str, str]:
        status = self.last_status()
        return kv(status) if status is not None else {}

    def count(self, name: str) -> int:
        return int(self.counts().get(name, 0))

    def wait_count(self, name: str, at_least: int, timeout: float = 20.0) -> None:
        self.probe.spin_until(lambda: self.count(name) >= at_least, timeout, f"diagnostics {name} >= {at_least}")

    def wait_status(self, level, timeout: float = 20.0) -> DiagnosticStatus:
        start = len(self.diagnostics)
        self.probe.spin_until(lambda: any(s.level == level for d in self.diagnostics[start:] for s in d.status),
                              timeout, f"diagnostics level {level!r}")
        return self.last_status()

    def instruct(self, text: str, timeout: float = 30.0) -> InstructionStatus:
        """Publish an instruction and wait until the node says it has applied it (InstructionStatus)."""
        seen = max((s.sequence for s in self.statuses), default=0)
        self.instruction.publish(String(data=text))
        self.probe.spin_until(lambda: any(s.sequence > seen and s.text == text for s in self.statuses), timeout,
                              f"instruction_active for '{text[:40]}'")
        return self.statuses[-1]


def parameter_value(value) -> ParameterValue:
    if isinstance(value, ParameterValue):
        return value
    if isinstance(value, bool):
        return ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=value)
    if isinstance(value, int):
        return ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=value)
    if isinstance(value, float):
        return ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
    if isinstance(value, str):
        return ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
    if value is None:
        return ParameterValue(type=ParameterType.PARAMETER_NOT_SET)
    return ParameterValue(type=ParameterType.PARAMETER_DOUBLE_ARRAY, double_array_value=[float(v) for v in value])


def kv(status: DiagnosticStatus) -> dict[str, str]:
    return {item.key: item.value for item in status.values}


def exit_layers(log: str) -> dict[int, int]:
    """Exit index -> LLM layers, from the node's start-up line 'loaded ...; exits 1:2L/0.0016G, 2:4L/...'."""
    line = next(line for line in log.splitlines() if "; exits " in line)
    items = line.split("; exits ", 1)[1].split(";")[0].split(", ")
    return {int(item.split(":")[0]): int(item.split(":")[1].split("L")[0]) for item in items}


def assert_sane(action: EndEffectorAction, sent: set, exits: dict[int, int] | None = None) -> None:
    """An action is safe to execute: finite, in range, answers a sent observation, bookkeeping of a real exit
    (`exits`: exit index -> layers, see exit_layers)."""
    values = np.concatenate([action.translation, action.rotation, [action.gripper, action.gflops]])
    assert np.all(np.isfinite(values)), f"non-finite action {values}"
    assert np.all(np.abs(values[:6]) <= 1.0), f"pose delta out of [-1, 1]: {values[:6]}"
    assert action.gripper in (-1.0, 1.0), f"gripper {action.gripper}"
    assert key(action.header.stamp) in sent, f"action for a stamp never sent: {key(action.header.stamp)}"
    assert action.exit_index >= 1 and action.layers >= 1 and action.gflops > 0
    if exits is not None:
        assert exits.get(action.exit_index) == action.layers, \
            f"exit {action.exit_index} ran {action.layers} layers; the model's exits are {exits}"
