"""calvin_bridge: the CALVIN benchmark as ROS topics, so the policy runs and is measured without a robot.

mode=replay: recorded CALVIN-format episodes are published frame by frame (both cameras as rgb8, the segment's
instruction, the recorded action as `expert_action`, and /clock at the CALVIN control rate of 30 Hz). With
`lockstep` the next frame goes out only once the policy's action for the current one arrived, so an evaluation
is the same whatever the model's speed; otherwise frames go out at `rate_hz`. The policy's actions are scored
against the recorded ones (open-loop evaluation) and the summary is published on `evaluation` and written to
`report_path`.

mode=sim: the live CALVIN simulator (calvin_env) in closed loop, running the LH-MTLC protocol.

Time: the bridge is the source of sim time, so its own waits (rate, lockstep timeouts) use the wall clock.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rclpy
from builtin_interfaces.msg import Time as TimeMsg
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image
from std_msgs.msg import String

from deer_ros.calvin.dataset import CalvinDatasetError, CalvinSplit
from deer_ros.calvin.evaluation import OpenLoopEvaluator
from deer_ros.calvin.protocol import ProtocolError
from deer_ros.calvin.sim import CalvinEnvMissing
from deer_ros.msg import EndEffectorAction
from deer_ros.paths import split_folder
from deer_ros.ros.image import rgb_to_image
from deer_ros.ros.node_main import run_node
from deer_ros.ros.params import ParamSpec, check_changes, declare, values

NODE_NAME = "calvin_bridge"
MAX_UNANSWERED = 1000  # free-running: frames kept waiting for a late action
CALVIN_HZ = 30.0  # CALVIN's control rate: sim time advances 1/30 s per frame whatever rate_hz is

BRIDGE_PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec("mode", str, "replay", "replay recorded episodes or run the live simulator.",
              choices=("replay", "sim"), read_only=True),
    ParamSpec("dataset", str, "", "CALVIN dataset root (with training/ and validation/) or a split folder; "
              "'' = the bundled real CALVIN sample.", read_only=True),
    ParamSpec("split", str, "validation", "Split to play.", choices=("training", "validation"), read_only=True),
    ParamSpec("segments", str, "", "Comma-separated segment indices or task names to play; '' = all.",
              read_only=True),
    ParamSpec("rate_hz", float, 30.0, "Frames per second when not in lockstep.", 0.1, 10000.0),
    ParamSpec("lockstep", bool, True, "Publish the next frame only after the action for the current one."),
    ParamSpec("loop", bool, False, "Start again after the last segment."),
    ParamSpec("max_frames", int, 0, "Stop after this many frames; 0 = all.", 0, 100_000_000, read_only=True),
    ParamSpec("action_timeout_s", float, 2.0, "Lockstep: re-send a frame whose action has not come after this "
              "long (wall clock).", 0.01, 600.0),
    ParamSpec("instruction_settle_s", float, 0.05, "Pause after a new instruction before its first frame, so "
              "the policy has reset its history.", 0.0, 5.0),
    ParamSpec("start_timeout_s", float, 60.0, "How long to wait for the policy (a camera subscriber and an "
              "`action` publisher) before starting; 0 = start at once.", 0.0, 3600.0, read_only=True),
    ParamSpec("eval_sequences", str, "", "sim: JSON list of [initial_state, [5 task names]] chains (CALVIN's "
              "eval_sequences.json).", read_only=True),
    ParamSpec("num_chains", int, 0, "sim: how many chains to run; 0 = all.", 0, 1_000_000, read_only=True),
    ParamSpec("report_path", str, "", "Write the open-loop evaluation JSON here at the end; '' = do not.",
              read_only=True),
    ParamSpec("exit_when_done", bool, False, "Exit (code 0) after the last frame instead of idling.",
              read_only=True),
)
_SPECS = {spec.name: spec for spec in BRIDGE_PARAMETERS}
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
STREAM = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def sim_stamp(frame_counter: int) -> TimeMsg:
    ns = int(round(frame_counter * 1e9 / CALVIN_HZ))
    return TimeMsg(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def _stamp_key(stamp: TimeMsg) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


@dataclass
class _Pending:
    """A published frame waiting for the policy's action."""

    segment: int                      # segment index (replay) or subtask counter (sim)
    truth: np.ndarray | None          # recorded rel_action (replay), None in sim
    lockstep: bool                    # someone waits for the answer (else it is dropped once scored)
    answer: EndEffectorAction | None = None


class CalvinBridgeNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        declare(self, BRIDGE_PARAMETERS)
        self.add_on_set_parameters_callback(lambda ps: _result(check_changes(_SPECS, ps)))
        p = values(self, BRIDGE_PARAMETERS)
        self.mode = p["mode"]
        self.split = CalvinSplit(split_folder(p["dataset"], p["split"]))
        self.segments = self.split.select_segments(p["segments"])
        self.sim = self._make_sim(p) if self.mode == "sim" else None
        self.evaluator = OpenLoopEvaluator()
        self._pub_static = self.create_publisher(Image, "camera/static/image_raw", STREAM)
        self._pub_gripper = self.create_publisher(Image, "camera/gripper/image_raw", STREAM)
        self._pub_instruction = self.create_publisher(String, "instruction", LATCHED)
        self._pub_expert = self.create_publisher(EndEffectorAction, "expert_action", STREAM)
        self._pub_clock = self.create_publisher(Clock, "/clock", STREAM)
        self._pub_eval = self.create_publisher(String, "evaluation", LATCHED)
        self.create_subscription(EndEffectorAction, "action", self._on_action, STREAM)
        self._pending: dict[int, _Pending] = {}  # stamp (ns) -> frame awaiting an action
        self._answered = threading.Condition()
        self.counter = 0          # frames published (sim time = counter / 30 Hz)
        self.frames_sent = 0
        self.resends = 0
        self.lost = 0             # free-running frames forgotten unanswered (MAX_UNANSWERED)
        self.failed: str | None = None
        self.result: dict = {}
        self.done = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._play, name="calvin_bridge_player", daemon=True)
        pace = "lockstep" if p["lockstep"] or self.mode == "sim" else f"{p['rate_hz']} Hz"
        what = f"{len(self.segments)} segments" if self.mode == "replay" else "LH-MTLC chains in calvin_env"
        self.get_logger().info(f"{self.mode}: {what} from {self.split.path} ({pace})")

    def _make_sim(self, p: dict):
        from deer_ros.calvin.sim import CalvinSim

        return CalvinSim(self.split.path)  # raises CalvinEnvMissing with install instructions

    def start(self) -> None:
        self._thread.start()

    # ---------------------------------------------------------------- policy answers
    def _on_action(self, msg: EndEffectorAction) -> None:
        key = _stamp_key(msg.header.stamp)
        with self._answered:
            pending = self._pending.get(key)
            if pending is None or pending.answer is not None:
                return  # an answer to a re-sent frame, or from another run
            pending.answer = msg
            if not pending.lockstep:
                del self._pending[key]
            self._answered.notify_all()
        if pending.truth is not None:
            predicted = np.concatenate([msg.translation, msg.rotation, [msg.gripper]]).astype(np.float32)
            self.evaluator.add(pending.segment, predicted, pending.truth, int(msg.exit_index), int(msg.layers),
                               float(msg.gflops))

    # ---------------------------------------------------------------- playback
    def _play(self) -> None:
        try:
            self._wait_for_policy()
            self._run_sim() if self.mode == "sim" else self._run_replay()
            self._finish()
        except Exception as exc:  # noqa: BLE001 - report and end the run instead of dying silently
            if self._stop.is_set() or not self.context.ok():
                return  # shutting down (Ctrl-C): publishing fails once the context is gone, that is no error
            self.failed = f"{type(exc).__name__}: {exc}"
            self.get_logger().error(f"{self.mode} failed: {self.failed}")
        finally:
            self.done.set()

    def _wait_for_policy(self) -> None:
        """Wait (up to start_timeout_s) until someone subscribes to the cameras and offers `action`."""
        timeout = self.get_parameter("start_timeout_s").value
        deadline = time.monotonic() + timeout

        def ready() -> bool:
            return self._pub_static.get_subscription_count() > 0 and self.count_publishers("action") > 0

        while timeout and not ready() and time.monotonic() < deadline:
            if self._stop.wait(0.05):
                return

    def _run_replay(self) -> None:
        max_frames = self.get_parameter("max_frames").value
        while not self._stop.is_set():
            for seg_index, segment in self.segments:
                self._announce(segment.instruction)
                next_time = time.monotonic()
                for index in segment.frames:
                    if self._stop.is_set() or (max_frames and self.counter >= max_frames):
                        return
                    frame = self.split.frame(index, keys=())  # cameras and rel_actions only
                    truth = frame.rel_actions.astype(np.float32)
                    if self.get_parameter("lockstep").value:
                        self._exchange(seg_index, frame.rgb_static, frame.rgb_gripper, truth)
                    else:
                        self._publish(seg_index, frame.rgb_static, frame.rgb_gripper, truth, lockstep=False)
                        next_time += 1.0 / self.get_parameter("rate_hz").value
                        self._stop.wait(max(0.0, next_time - time.monotonic()))
            if not self.get_parameter("loop").value:
                return

    def _run_sim(self) -> None:
        from deer_ros.calvin.protocol import lh_mtlc_metrics, load_eval_sequences, run_lh_mtlc

        path = self.get_parameter("eval_sequences").value
        sequences = load_eval_sequences(path, limit=self.get_parameter("num_chains").value or None)
        policy = _RosChainPolicy(self)

        def progress(i: int, chain) -> None:
            self.get_logger().info(f"chain {i + 1}/{len(sequences)}: {chain.successes}/5 subtasks")

        results = run_lh_mtlc(self.sim, policy, sequences, on_chain=progress)
        self.result = lh_mtlc_metrics(results)

    def _announce(self, instruction: str) -> None:
        """Publish a (new) instruction; the policy resets its history on it, so give it a moment."""
        self._pub_instruction.publish(String(data=instruction))
        self._stop.wait(self.get_parameter("instruction_settle_s").value)

    def _publish(self, segment: int, static: np.ndarray, gripper: np.ndarray, truth: np.ndarray | None,
                 lockstep: bool = True) -> tuple[int, TimeMsg]:
        stamp = sim_stamp(self.counter)
        key = _stamp_key(stamp)
        with self._answered:
            self._pending[key] = _Pending(segment, truth, lockstep)
            if len(self._pending) > MAX_UNANSWERED:  # free-running faster than the policy: forget the oldest
                del self._pending[next(iter(self._pending))]
                self.lost += 1
        self._send(static, gripper, truth, stamp)
        self.counter += 1
        self.frames_sent += 1
        return key, stamp

    def _send(self, static: np.ndarray, gripper: np.ndarray, truth: np.ndarray | None, stamp: TimeMsg) -> None:
        self._pub_clock.publish(Clock(clock=stamp))
        self._pub_static.publish(rgb_to_image(static, stamp, "calvin_static_camera"))
        self._pub_gripper.publish(rgb_to_image(gripper, stamp, "calvin_gripper_camera"))
        if truth is not None:
            expert = EndEffectorAction()
            expert.header.stamp = stamp
            expert.header.frame_id = "calvin_static_camera"
            expert.translation, expert.rotation, expert.gripper = truth[0:3], truth[3:6], float(truth[6])
            self._pub_expert.publish(expert)

    def _exchange(self, segment: int, static: np.ndarray, gripper: np.ndarray,
                  truth: np.ndarray | None) -> EndEffectorAction | None:
        """Lockstep: publish a frame and wait for its action, re-sending it after action_timeout_s."""
        key, stamp = self._publish(segment, static, gripper, truth)
        with self._answered:
            while not self._stop.is_set():
                if self._answered.wait_for(lambda: self._pending[key].answer is not None,
                                           self.get_parameter("action_timeout_s").value):
                    return self._pending.pop(key).answer
                self.resends += 1
                self.get_logger().warning(f"no action for the frame at t={key / 1e9:.3f} s: re-sending",
                                          throttle_duration_sec=5.0)
                self._send(static, gripper, truth, stamp)
        return None

    def _finish(self) -> None:
        # Free-running: give the last answers a moment to arrive.
        deadline = time.monotonic() + 2.0
        while self.unanswered and time.monotonic() < deadline and not self._stop.wait(0.02):
            pass
        summary = self.summary()
        self._pub_eval.publish(String(data=json.dumps(summary)))
        path = self.get_parameter("report_path").value
        if path:
            Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
            Path(path).expanduser().write_text(json.dumps(summary, indent=2))
        self.get_logger().info(f"done: {self.frames_sent} frames, {self.unanswered} unanswered, "
                               f"{self.resends} re-sent")

    @property
    def unanswered(self) -> int:
        with self._answered:
            return sum(p.answer is None for p in self._pending.values())

    def summary(self) -> dict:
        if self.mode == "sim":
            report = {"lh_mtlc": self.result, "overall": {}}
        else:
            report = self.evaluator.to_json(segment_names={i: s.instruction for i, s in self.segments})
        report["bridge"] = {"mode": self.mode, "frames_sent": self.frames_sent, "unanswered": self.unanswered,
                            "resends": self.resends, "lost": self.lost, "dataset": str(self.split.path)}
        return report

    def close(self) -> None:
        self._stop.set()
        with self._answered:
            self._answered.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=10.0)
        self.destroy_node()


class _RosChainPolicy:
    """The LH-MTLC protocol's policy: whatever node answers on `action`, reached through the bridge's topics."""

    def __init__(self, bridge: CalvinBridgeNode) -> None:
        self.bridge = bridge
        self.subtask = 0
        self._announced = False

    def reset(self) -> None:
        self.subtask += 1
        self._announced = False  # the next act() publishes the instruction, which resets the policy's history

    def act(self, obs, instruction: str):
        if not self._announced:
            self.bridge._announce(instruction)
            self._announced = True
        msg = self.bridge._exchange(self.subtask, obs.rgb_static, obs.rgb_gripper, None)
        if msg is None:
            raise RuntimeError("stopped while waiting for an action")
        action = np.concatenate([msg.translation, msg.rotation, [msg.gripper]]).astype(np.float64)
        return _Step(action, float(msg.gflops), int(msg.layers))


@dataclass
class _Step:
    action: np.ndarray
    gflops: float
    layers: int


def _result(reason: str | None):
    from rcl_interfaces.msg import SetParametersResult

    return SetParametersResult(successful=reason is None, reason=reason or "")


def _run(node: CalvinBridgeNode) -> int:
    node.start()
    exit_when_done = node.get_parameter("exit_when_done").value
    while rclpy.ok() and not (exit_when_done and node.done.is_set()):
        rclpy.spin_once(node, timeout_sec=0.1)
    return 1 if node.failed else 0


def main(args: list[str] | None = None) -> int:
    return run_node(NODE_NAME, CalvinBridgeNode, _run, args,
                    fatal=(CalvinDatasetError, CalvinEnvMissing, ProtocolError, FileNotFoundError),
                    parameters=BRIDGE_PARAMETERS)


if __name__ == "__main__":
    raise SystemExit(main())
