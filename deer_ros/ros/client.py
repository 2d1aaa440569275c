"""A ROS 2 client of deer_ros's nodes for programs that are not nodes themselves (scripts, tests, benchmarks).

`PolicyClient` owns an rclpy node with its own context and executor (it never touches the global rclpy context,
and spins only when one of its methods waits), in a chosen ROS domain. It talks to a running deer_policy_node the
way a robot program does: send an instruction and wait until the policy confirms it on `instruction_active`, set
and read the budget parameters through the parameter services, call `~/reset`, publish an observation (both
cameras with one stamp, and /clock under sim time) and wait for its action, and collect every action,
InstructionStatus and /diagnostics message it hears. `StandInPolicy` makes the client play the policy's part
for a calvin_bridge (tests of the bridge without a model).

    with PolicyClient(domain_id=7) as client:
        client.wait_for_policy()
        client.instruct("open the drawer")
        client.set_parameter("flops_budget", 0.004)
        action = client.act(1.0, static=rgb_static, gripper=rgb_gripper)
"""
from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterDescriptor, ParameterType, ParameterValue, SetParametersResult
from rcl_interfaces.srv import DescribeParameters, GetParameters, SetParameters, SetParametersAtomically
from rclpy.executors import SingleThreadedExecutor
from rclpy.task import Future
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image
from std_msgs.msg import String
from std_srvs.srv import Trigger

from deer_ros.msg import EndEffectorAction, InstructionStatus
# The profiles the nodes use (the bridge's: latched instruction/status, reliable streams), so that the client
# matches them exactly.
from deer_ros.ros.qos import LATCHED, STREAM
from deer_ros.ros.image import rgb_to_image

CAMERAS = ("static", "gripper")
RESEND_S = 2.0  # act(): re-send an unanswered observation this often, like the bridge in lockstep
_PATTERN = np.random.default_rng(0)
# A fixed observation of CALVIN's camera sizes, for checks that need any valid image pair.
TEST_PATTERN = {"static": _PATTERN.integers(0, 256, (200, 200, 3), dtype=np.uint8),
                "gripper": _PATTERN.integers(0, 256, (84, 84, 3), dtype=np.uint8)}


def stamp_key(stamp: Time) -> tuple[int, int]:
    """A header stamp as a hashable (sec, nanosec) pair."""
    return stamp.sec, stamp.nanosec


def sim_time(t: float) -> Time:
    """Seconds as a builtin_interfaces/Time."""
    return Time(sec=int(t), nanosec=int(round((t % 1) * 1e9)))


class Heard(list):
    """Messages received on one topic, in order; `times[i]` is when message i arrived (time.monotonic())."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def add(self, msg: Any) -> None:
        self.append(msg)
        self.times.append(time.monotonic())


class PolicyClient:
    """A client node of deer_policy_node (named `policy_node`), in `domain_id` (None = ROS_DOMAIN_ID, or 0).

    `sim_time`: publish /clock with each observation (for a node started with use_sim_time true). Publishers
    are created on first use, so a client that only listens is not taken for a camera or a policy by others.
    """

    def __init__(self, domain_id: int | None = None, name: str = "deer_ros_client",
                 policy_node: str = "/deer_policy", sim_time: bool = True) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.policy_node = policy_node
        self.sim_time = sim_time
        self._publishers: dict[str, Any] = {}
        self._services: dict[str, Any] = {}
        self.actions: Heard = self.collect(EndEffectorAction, "action", STREAM)
        self.statuses: Heard = self.collect(InstructionStatus, "instruction_active", LATCHED)
        self.diagnostics: Heard = self.collect(DiagnosticArray, "/diagnostics", 10)

    def __enter__(self) -> PolicyClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)

    # ---------------------------------------------------------------- spinning
    def spin_until(self, condition: Callable[[], bool], timeout: float, what: str = "condition") -> None:
        """Spin until `condition()` holds; TimeoutError naming `what` after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
            self.executor.spin_once(timeout_sec=0.005)

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.executor.spin_once(timeout_sec=min(0.005, left))

    def collect(self, msg_type, topic: str, qos=10) -> Heard:
        """Subscribe to `topic`; returns the list that received messages are appended to."""
        heard = Heard()
        self.node.create_subscription(msg_type, topic, heard.add, qos)
        return heard

    def publisher(self, msg_type, topic: str, qos=STREAM):
        """The client's publisher of `topic` (created on first use)."""
        if topic not in self._publishers:
            self._publishers[topic] = self.node.create_publisher(msg_type, topic, qos)
        return self._publishers[topic]

    # ---------------------------------------------------------------- the policy's inputs
    def policy_ready(self) -> bool:
        """Whether a policy subscribes to both cameras (its model is loaded) and offers `action`."""
        return (all(self._camera(c).get_subscription_count() > 0 for c in CAMERAS)
                and self.node.count_publishers("action") > 0)

    def wait_for_policy(self, timeout: float = 90.0) -> None:
        self.spin_until(self.policy_ready, timeout, "deer_policy to subscribe to its cameras and offer `action` "
                        "(model loading)")

    def publish_instruction(self, text: str) -> None:
        """Publish an instruction (latched) without waiting for the policy to apply it."""
        self.publisher(String, "instruction", LATCHED).publish(String(data=text))

    def instruct(self, text: str, timeout: float = 30.0) -> InstructionStatus:
        """Publish an instruction and wait until the policy says it has applied it (a new InstructionStatus
        with this text): frames sent afterwards are acted on with it and a fresh history."""
        seen = max((s.sequence for s in self.statuses), default=0)
        self.publish_instruction(text)
        self.spin_until(lambda: any(s.sequence > seen and s.text == text for s in self.statuses), timeout,
                        f"instruction_active for '{text[:40]}'")
        return self.statuses[-1]

    def publish_clock(self, t: float | Time) -> None:
        self.publisher(Clock, "/clock").publish(Clock(clock=_time(t)))

    def publish_image(self, camera: str, image: Image) -> None:
        self._camera(camera).publish(image)

    def send_observation(self, t: float | Time, static: np.ndarray | Image | None = TEST_PATTERN["static"],
                         gripper: np.ndarray | Image | None = TEST_PATTERN["gripper"],
                         clock: bool = True) -> Time:
        """Publish one observation stamped `t` (seconds or a Time): /clock first under sim time, then each
        camera given (RGB arrays or ready Images; None = that camera stays silent). Returns the stamp."""
        stamp = _time(t)
        images = {c: rgb if isinstance(rgb, Image) else rgb_to_image(rgb, stamp, c)
                  for c, rgb in (("static", static), ("gripper", gripper)) if rgb is not None}
        if self.sim_time and clock:
            self.publish_clock(stamp)
        for camera, image in images.items():
            self.publish_image(camera, image)
        return stamp

    def action_for(self, stamp: Time) -> EndEffectorAction | None:
        return next((a for a in self.actions if stamp_key(a.header.stamp) == stamp_key(stamp)), None)

    def act(self, t: float | Time, timeout: float = 30.0, **images) -> EndEffectorAction:
        """Send one observation and wait for its action, re-sending it every RESEND_S like the bridge does:
        /clock and the images travel on different topics, so the node may judge a pair against a clock that has
        not caught up yet (stale, or from before the first /clock) and drop it once."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stamp = self.send_observation(t, **images)
            try:
                self.spin_until(lambda stamp=stamp: self.action_for(stamp) is not None, RESEND_S, "an action")
                return self.action_for(stamp)
            except TimeoutError:
                continue
        raise TimeoutError(f"no action for t={t} within {timeout:.0f} s")

    # ---------------------------------------------------------------- services
    def request(self, srv_type, service: str, request, timeout: float = 20.0, wait: bool = True):
        """Call `service` (relative names are the policy node's: 'reset' -> /deer_policy/reset) once it is
        available; returns the reply, or with wait=False the future at once."""
        name = service if service.startswith("/") else f"{self.policy_node}/{service}"
        if name not in self._services:
            self._services[name] = self.node.create_client(srv_type, name)
        client = self._services[name]
        self.spin_until(client.service_is_ready, timeout, f"service {name}")
        future: Future = client.call_async(request)
        if not wait:
            return future
        self.spin_until(future.done, timeout, f"a reply from {name}")
        return future.result()

    def reset(self) -> Trigger.Response:
        """Clear the policy's recurrent history (applied before its next step)."""
        return self.request(Trigger, "reset", Trigger.Request())

    def set_parameters(self, params: Mapping[str, Any] | Sequence[ParameterMsg], atomically: bool = False,
                       wait: bool = True):
        """Set parameters (name -> value, or ready Parameter messages); one SetParametersResult per parameter,
        or with `atomically` one for all."""
        msgs = [ParameterMsg(name=n, value=parameter_value(v)) for n, v in params.items()] \
            if isinstance(params, Mapping) else list(params)
        if atomically:
            reply = self.request(SetParametersAtomically, "set_parameters_atomically",
                                 SetParametersAtomically.Request(parameters=msgs), wait=wait)
            return reply.result if wait else reply
        reply = self.request(SetParameters, "set_parameters", SetParameters.Request(parameters=msgs), wait=wait)
        return reply.results if wait else reply

    def set_parameter(self, name: str, value) -> SetParametersResult:
        return self.set_parameters({name: value})[0]

    def get_parameter(self, name: str):
        """The parameter's value as a Python value (None when not set)."""
        return python_value(self.request(GetParameters, "get_parameters", GetParameters.Request(names=[name]))
                            .values[0])

    def describe_parameter(self, name: str) -> ParameterDescriptor:
        return self.request(DescribeParameters, "describe_parameters",
                            DescribeParameters.Request(names=[name])).descriptors[0]

    def change_state(self, transition_id: int, timeout: float = 90.0) -> bool:
        """Trigger a lifecycle transition (lifecycle_msgs/Transition id); whether it succeeded."""
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        request = ChangeState.Request(transition=Transition(id=transition_id))
        return self.request(ChangeState, "change_state", request, timeout).success

    def lifecycle_state(self) -> str:
        """The policy node's lifecycle state label ('unconfigured', 'inactive', 'active', ...)."""
        from lifecycle_msgs.srv import GetState

        return self.request(GetState, "get_state", GetState.Request()).current_state.label

    # ---------------------------------------------------------------- diagnostics
    def status(self, node: str | None = None) -> DiagnosticStatus | None:
        """The last /diagnostics status of the policy node (or of another node whose status name has `node`)."""
        name = node or self.policy_node.rsplit("/", 1)[-1]
        statuses = [s for d in self.diagnostics for s in d.status if name in s.name]
        return statuses[-1] if statuses else None

    def counts(self, node: str | None = None) -> dict[str, str]:
        """The key/values of the last status (counters, budget report, last_error)."""
        status = self.status(node)
        return diagnostic_values(status) if status is not None else {}

    def count(self, name: str) -> int:
        return int(self.counts().get(name, 0))

    def wait_count(self, name: str, at_least: int, timeout: float = 20.0) -> None:
        self.spin_until(lambda: self.count(name) >= at_least, timeout, f"diagnostics {name} >= {at_least}")

    def wait_status(self, level: bytes, timeout: float = 20.0) -> DiagnosticStatus:
        """Wait for a policy status of `level` newer than the call; returns the last status."""
        start = len(self.diagnostics)
        name = self.policy_node.rsplit("/", 1)[-1]
        self.spin_until(lambda: any(s.level == level and name in s.name for d in self.diagnostics[start:]
                                    for s in d.status), timeout, f"diagnostics level {level!r}")
        return self.status()

    def _camera(self, camera: str):
        return self.publisher(Image, f"camera/{camera}/image_raw")


class StandInPolicy:
    """The client acting as a policy for a calvin_bridge: answers every static camera frame with an action of
    the same stamp, and, if asked, confirms instructions on `instruction_active` as deer_policy_node does (the
    lockstep handshake). A stand-in, not a model: for tests of the bridge's protocol.

    `status_delay_s`: publish InstructionStatus that long after an instruction arrives; None = never (a policy
    without the handshake). `answer_delay_s`: answer that long after the frame arrived. `answer`: frame number
    -> (7,) action or None (stay silent). `replay_expert`: answer each frame with the bridge's `expert_action` of
    the same stamp (the recorded action) instead; a frame with none gets `answer`'s after EXPERT_WAIT_S.
    """

    EXPERT_WAIT_S = 0.5

    def __init__(self, client: PolicyClient, status_delay_s: float | None = None, answer_delay_s: float = 0.0,
                 answer: Callable[[int], np.ndarray | None] = lambda n: np.zeros(7),
                 replay_expert: bool = False) -> None:
        self.answer = answer
        self.status_delay_s, self.answer_delay_s = status_delay_s, answer_delay_s
        self.events: list[tuple[str, object]] = []  # ('instruction', text) / ('status', text) / ('frame', stamp)
        self.frames: list[tuple[int, int]] = []      # every camera frame received, re-sends included
        self.answered: set[tuple[int, int]] = set()  # stamps answered (or deliberately left unanswered)
        self._due: list[tuple[float, str, object]] = []
        self._sequence = 0
        node = client.node
        self._actions = node.create_publisher(EndEffectorAction, "action", STREAM)
        self._status = node.create_publisher(InstructionStatus, "instruction_active", LATCHED) \
            if status_delay_s is not None else None
        node.create_subscription(Image, "camera/static/image_raw", self._on_image, STREAM)
        node.create_subscription(String, "instruction", self._on_instruction, LATCHED)
        self.expert: dict[tuple[int, int], np.ndarray] | None = {} if replay_expert else None
        if replay_expert:
            node.create_subscription(EndEffectorAction, "expert_action", self._on_expert, STREAM)
        node.create_timer(0.01, self._tick)

    def _on_expert(self, msg: EndEffectorAction) -> None:
        self.expert[stamp_key(msg.header.stamp)] = np.array([*msg.translation, *msg.rotation, msg.gripper])

    def _on_instruction(self, msg: String) -> None:
        self.events.append(("instruction", msg.data))
        if self._status is not None:
            self._due.append((time.monotonic() + self.status_delay_s, "status", msg.data))

    def _on_image(self, msg: Image) -> None:
        stamp = stamp_key(msg.header.stamp)
        self.frames.append(stamp)
        self.events.append(("frame", stamp))
        if stamp not in self.answered:
            self._due.append((time.monotonic() + self.answer_delay_s, "answer", msg.header.stamp))

    def _tick(self) -> None:
        now = time.monotonic()
        due, self._due = [d for d in self._due if d[0] <= now], [d for d in self._due if d[0] > now]
        for due_at, kind, value in due:
            if kind == "status":
                self._sequence += 1
                self._status.publish(InstructionStatus(text=value, sequence=self._sequence))
                self.events.append(("status", value))
                continue
            key = stamp_key(value)
            if key in self.answered:
                continue
            if self.expert is not None and key not in self.expert and now < due_at + self.EXPERT_WAIT_S:
                self._due.append((due_at, kind, value))  # the recorded action may still be on its way
                continue
            action = self.expert[key] if self.expert and key in self.expert else self.answer(len(self.answered))
            self.answered.add(key)
            if action is None:
                continue
            msg = EndEffectorAction()
            msg.header.stamp = value
            msg.translation, msg.rotation = [float(v) for v in action[:3]], [float(v) for v in action[3:6]]
            msg.gripper = float(action[6])
            msg.exit_index, msg.layers, msg.gflops = 1, 1, 0.5
            self._actions.publish(msg)


def _time(t: float | Time) -> Time:
    return t if isinstance(t, Time) else sim_time(t)


def parameter_value(value) -> ParameterValue:
    """A Python value as a ParameterValue (a list = a double array; None = not set)."""
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


def python_value(v: ParameterValue):
    return {ParameterType.PARAMETER_DOUBLE: v.double_value, ParameterType.PARAMETER_INTEGER: v.integer_value,
            ParameterType.PARAMETER_STRING: v.string_value, ParameterType.PARAMETER_BOOL: v.bool_value,
            ParameterType.PARAMETER_DOUBLE_ARRAY: list(v.double_array_value)}.get(v.type)


def diagnostic_values(status: DiagnosticStatus) -> dict[str, str]:
    return {item.key: item.value for item in status.values}
