"""A stand-in policy on an in-process Probe (tests, benchmarks): answers the bridge's frames and, if asked,
confirms instructions on `instruction_active` as deer_policy_node does (the lockstep handshake)."""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import String

from deer_ros.msg import EndEffectorAction, InstructionStatus
from deer_ros.ros.probe import Probe

EXPERT_WAIT_S = 0.5  # replay_expert: how long a frame waits for its recorded action
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


class ProbePolicy:
    """The test probe acting as a policy: answers every camera frame with an action of the same stamp.

    `status_delay_s`: publish InstructionStatus (the lockstep handshake) that long after an instruction arrives;
    None = never (a policy without the handshake). `answer_delay_s`: answer that long after the frame arrived.
    `answer`: frame number -> (7,) action or None (stay silent). `replay_expert`: answer each frame with the
    bridge's `expert_action` of the same stamp (the recorded action) instead; a frame with none gets `answer`'s
    after EXPERT_WAIT_S.
    """

    def __init__(self, probe: Probe, status_delay_s: float | None = None, answer_delay_s: float = 0.0,
                 answer: Callable[[int], np.ndarray | None] = lambda n: np.zeros(7),
                 replay_expert: bool = False) -> None:
        self.probe, self.answer = probe, answer
        self.status_delay_s, self.answer_delay_s = status_delay_s, answer_delay_s
        self.events: list[tuple[str, object]] = []  # ('instruction', text) / ('status', text) / ('frame', stamp)
        self.frames: list[tuple[int, int]] = []      # every camera frame received, re-sends included
        self._due: list[tuple[float, str, object]] = []
        self._sequence = 0
        self.answered: set[tuple[int, int]] = set()  # stamps answered (or deliberately left unanswered)
        node = probe.node
        self.actions = node.create_publisher(EndEffectorAction, "action", 10)
        self.status = node.create_publisher(InstructionStatus, "instruction_active", LATCHED) \
            if status_delay_s is not None else None
        node.create_subscription(Image, "camera/static/image_raw", self._on_image, 10)
        node.create_subscription(String, "instruction", self._on_instruction, LATCHED)
        self.expert: dict[tuple[int, int], np.ndarray] | None = {} if replay_expert else None
        if replay_expert:
            node.create_subscription(EndEffectorAction, "expert_action", self._on_expert, 10)
        node.create_timer(0.01, self._tick)

    def _on_expert(self, msg: EndEffectorAction) -> None:
        self.expert[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = np.array(
            [*msg.translation, *msg.rotation, msg.gripper])

    def _on_instruction(self, msg) -> None:
        self.events.append(("instruction", msg.data))
        if self.status is not None:
            self._due.append((time.monotonic() + self.status_delay_s, "status", msg.data))

    def _on_image(self, msg) -> None:
        stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec)
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
                self.status.publish(InstructionStatus(text=value, sequence=self._sequence))
                self.events.append(("status", value))
                continue
            key = (value.sec, value.nanosec)
            if key in self.answered:
                continue
            if self.expert is not None and key not in self.expert and now < due_at + EXPERT_WAIT_S:
                self._due.append((due_at, kind, value))  # the recorded action may still be on its way
                continue
            action = self.expert[key] if self.expert and key in self.expert else self.answer(len(self.answered))
            self.answered.add(key)
            if action is None:
                continue
            msg = EndEffectorAction()
            msg.header.stamp = value
            msg.translation, msg.rotation, msg.gripper = [float(v) for v in action[:3]], \
                [float(v) for v in action[3:6]], float(action[6])
            msg.exit_index, msg.layers, msg.gflops = 1, 1, 0.5
            self.actions.publish(msg)
