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
from pathlib import Path

import numpy as np
import rclpy
from builtin_interfaces.msg import Time as TimeMsg
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image
from std_msgs.msg import String

from deer_ros.calvin.dataset import CalvinDatasetError, CalvinSplit
from deer_ros.calvin.evaluation import OpenLoopEvaluator
from deer_ros.msg import EndEffectorAction
from deer_ros.paths import calvin_sample
from deer_ros.ros.image import rgb_to_image
from deer_ros.ros.params import ParamSpec, check_changes, declare, values

NODE_NAME = "calvin_bridge"
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
    ParamSpec("start_timeout_s", float, 60.0, "How long to wait for a subscriber on `action`'s publisher "
              "(the policy) before starting; 0 = start at once.", 0.0, 3600.0, read_only=True),
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


def resolve_split(dataset: str, split: str) -> Path:
    """`dataset` may be a root with training/ and validation/ or a split folder itself."""
    root = Path(dataset).expanduser() if dataset else calvin_sample()
    return root / split if (root / split).is_dir() else root


class CalvinBridgeNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        declare(self, BRIDGE_PARAMETERS)
        self.add_on_set_parameters_callback(lambda ps: _result(check_changes(_SPECS, ps)))
        p = values(self, BRIDGE_PARAMETERS)
        if p["mode"] == "sim":
            from deer_ros.calvin.sim import require_calvin_env

            require_calvin_env()  # raises with install instructions when calvin_env is missing
        self.split = CalvinSplit(resolve_split(p["dataset"], p["split"]))
        self.segments = self.split.select_segments(p["segments"])
        self.evaluator = OpenLoopEvaluator()
        self._pub_static = self.create_publisher(Image, "camera/static/image_raw", STREAM)
        self._pub_gripper = self.create_publisher(Image, "camera/gripper/image_raw", STREAM)
        self._pub_instruction = self.create_publisher(String, "instruction", LATCHED)
        self._pub_expert = self.create_publisher(EndEffectorAction, "expert_action", STREAM)
        self._pub_clock = self.create_publisher(Clock, "/clock", STREAM)
        self._pub_eval = self.create_publisher(String, "evaluation", LATCHED)
        self.create_subscription(EndEffectorAction, "action", self._on_action, STREAM)
        self._pending: dict[int, int] = {}       # stamp (ns) -> segment index, frames awaiting an action
        self._truth: dict[int, np.ndarray] = {}  # stamp (ns) -> recorded rel_action of that frame
        self.failed: str | None = None
        self._answered = threading.Event()
        self._waiting_for: int | None = None
        self._lock = threading.Lock()
        self.frames_sent = 0
        self.resends = 0
        self.done = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._play, name="calvin_bridge_player", daemon=True)
        pace = "lockstep" if p["lockstep"] else f"{p['rate_hz']} Hz"
        self.get_logger().info(f"replaying {len(self.segments)} segments from {self.split.path} ({pace})")

    def start(self) -> None:
        self._thread.start()

    # ---------------------------------------------------------------- policy answers
    def _on_action(self, msg: EndEffectorAction) -> None:
        key = _stamp_key(msg.header.stamp)
        with self._lock:
            segment = self._pending.pop(key, None)
            if segment is None:
                return  # an answer to a frame already answered (a re-sent frame) or from another run
            truth = self._truth.pop(key)
        predicted = np.concatenate([msg.translation, msg.rotation, [msg.gripper]]).astype(np.float32)
        self.evaluator.add(segment, predicted, truth, int(msg.exit_index), int(msg.layers), float(msg.gflops))
        if key == self._waiting_for:
            self._answered.set()

    # ---------------------------------------------------------------- playback
    def _play(self) -> None:
        try:
            self._wait_for_policy()
            counter = 0
            max_frames = self.get_parameter("max_frames").value
            while not self._stop.is_set():
                for seg_index, segment in self.segments:
                    counter = self._play_segment(seg_index, segment, counter, max_frames)
                    if self._stop.is_set() or (max_frames and counter >= max_frames):
                        break
                if not self.get_parameter("loop").value or (max_frames and counter >= max_frames):
                    break
            self._finish()
        except Exception as exc:  # noqa: BLE001 - report and end the run instead of dying silently
            self.get_logger().error(f"playback failed: {exc}")
            self.failed = str(exc)
        finally:
            self.done.set()

    def _wait_for_policy(self) -> None:
        timeout = self.get_parameter("start_timeout_s").value
        deadline = time.monotonic() + timeout
        while timeout and self._pub_static.get_subscription_count() == 0 and time.monotonic() < deadline:
            if self._stop.wait(0.05):
                return
        if self.get_parameter("lockstep").value:
            while (timeout and self.count_publishers("action") == 0 and time.monotonic() < deadline
                   and not self._stop.wait(0.05)):
                pass

    def _play_segment(self, seg_index: int, segment, counter: int, max_frames: int) -> int:
        self._pub_instruction.publish(String(data=segment.instruction))
        self._stop.wait(self.get_parameter("instruction_settle_s").value)
        next_time = time.monotonic()
        for index in range(segment.start, segment.end + 1):
            if self._stop.is_set() or (max_frames and counter >= max_frames):
                break
            frame = self.split.frame(index, keys=())  # cameras and rel_actions only
            stamp = sim_stamp(counter)
            key = _stamp_key(stamp)
            with self._lock:
                self._pending[key] = seg_index
                self._truth[key] = frame.rel_actions.astype(np.float32)
            self._publish_frame(frame, stamp)
            counter += 1
            if self.get_parameter("lockstep").value:
                self._wait_for_answer(key, frame, stamp)
            else:
                next_time += 1.0 / self.get_parameter("rate_hz").value
                self._stop.wait(max(0.0, next_time - time.monotonic()))
        return counter

    def _publish_frame(self, frame, stamp: TimeMsg) -> None:
        self._pub_clock.publish(Clock(clock=stamp))
        self._pub_static.publish(rgb_to_image(frame.rgb_static, stamp, "calvin_static_camera"))
        self._pub_gripper.publish(rgb_to_image(frame.rgb_gripper, stamp, "calvin_gripper_camera"))
        expert = EndEffectorAction()
        expert.header.stamp = stamp
        expert.header.frame_id = "calvin_static_camera"
        rel = frame.rel_actions.astype(np.float32)
        expert.translation, expert.rotation, expert.gripper = rel[0:3], rel[3:6], float(rel[6])
        self._pub_expert.publish(expert)
        self.frames_sent += 1

    def _wait_for_answer(self, key: int, frame, stamp: TimeMsg) -> None:
        self._waiting_for = key
        with self._lock:
            answered = key not in self._pending
        while not answered and not self._stop.is_set():
            if self._answered.wait(self.get_parameter("action_timeout_s").value):
                break
            with self._lock:
                answered = key not in self._pending
            if not answered:
                self.resends += 1
                self.get_logger().warning(f"no action for frame at t={key / 1e9:.3f} s: re-sending",
                                          throttle_duration_sec=5.0)
                self._publish_frame(frame, stamp)
                self.frames_sent -= 1  # a re-send is not a new frame
        self._answered.clear()

    def _finish(self) -> None:
        # Give the last answers in free-running mode a moment to arrive.
        deadline = time.monotonic() + 2.0
        while self._pending and time.monotonic() < deadline and not self._stop.wait(0.02):
            pass
        summary = self.summary()
        self._pub_eval.publish(String(data=json.dumps(summary)))
        path = self.get_parameter("report_path").value
        if path:
            Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
            Path(path).expanduser().write_text(json.dumps(summary, indent=2))
        overall = summary["overall"]
        self.get_logger().info(
            f"done: {self.frames_sent} frames, {overall.get('actions', 0)} actions, "
            f"{len(self._pending)} unanswered, {self.resends} re-sent")

    def summary(self) -> dict:
        report = self.evaluator.to_json(segment_names={i: s.instruction for i, s in self.segments})
        report["bridge"] = {"frames_sent": self.frames_sent, "unanswered": len(self._pending),
                            "resends": self.resends, "dataset": str(self.split.path)}
        return report

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10.0)
        self.destroy_node()


def _result(reason: str | None):
    from rcl_interfaces.msg import SetParametersResult

    return SetParametersResult(successful=reason is None, reason=reason or "")


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args)
    node = None
    code = 0
    try:
        node = CalvinBridgeNode()
        node.start()
        exit_when_done = node.get_parameter("exit_when_done").value
        while rclpy.ok() and not (exit_when_done and node.done.is_set()):
            rclpy.spin_once(node, timeout_sec=0.1)
        code = 1 if node.failed else 0
    except CalvinDatasetError as exc:
        rclpy.logging.get_logger(NODE_NAME).fatal(str(exc))
        code = 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.close()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    raise SystemExit(main())
