"""calvin_bridge: the CALVIN benchmark as ROS topics, so the policy runs and is measured without a robot.

mode=replay: recorded CALVIN-format episodes (or a rosbag2 bag's frames, deer_ros.bag.reader.BagSplit) are
published frame by frame (both cameras as rgb8, the segment's
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
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rclpy
from builtin_interfaces.msg import Time as TimeMsg
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image
from std_msgs.msg import String

from deer_ros.bag.reader import is_bag, open_split
from deer_ros.calvin.dataset import CalvinDatasetError
from deer_ros.calvin.evaluation import OpenLoopEvaluator
from deer_ros.calvin.protocol import ProtocolError
from deer_ros.calvin.sim import CalvinEnvMissing
from deer_ros.msg import EndEffectorAction, InstructionStatus
from deer_ros.dependencies import MissingDependency
from deer_ros.ros.image import rgb_to_image
from deer_ros.ros.node_main import run_node
from deer_ros.ros.params import ParameterError, ParamSpec, check_changes, declare, values
from deer_ros.ros.qos import LATCHED, STREAM
from deer_ros.stamps import stamp_ns

NODE_NAME = "calvin_bridge"
MAX_UNANSWERED = 1000  # free-running: frames kept waiting for a late action
CALVIN_HZ = 30.0  # CALVIN's control rate: sim time advances 1/30 s per frame whatever rate_hz is
RESEND_FACTOR = 3.0  # lockstep: re-send after this many times the recent (90th percentile) action latency
LATENCY_WINDOW = 50  # answers the re-send interval is based on
POLICY_HINT_S = 2.0  # a missing policy is reported after this long, then every 5 s

BRIDGE_PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec("mode", str, "replay", "replay recorded episodes or run the live simulator.",
              choices=("replay", "sim"), read_only=True),
    ParamSpec("dataset", str, "", "CALVIN dataset root (with training/ and validation/) or a split folder, or "
              "a rosbag2 bag (folder with metadata.yaml, or an .mcap/.db3 file; replay only) played frame by frame "
              "like a split; '' = the bundled real CALVIN sample.", read_only=True),
    ParamSpec("bag_topics", str, "", "dataset a bag: ROLE=TOPIC overrides of the topics read, ROLE one of "
              "static, gripper, instruction, action (defaults camera/static/image_raw, camera/gripper/image_raw, "
              "instruction, expert_action); 'action=' plays a bag without recorded actions (nothing scored).",
              read_only=True),
    ParamSpec("split", str, "validation", "Split to play.", choices=("training", "validation"), read_only=True),
    ParamSpec("segments", str, "", "Comma-separated segment indices or task names to play (replay, and sim "
              "with sim_start episodes); '' = all.", read_only=True),
    ParamSpec("rate_hz", float, 30.0, "Frames per second when not in lockstep (replay only).", 0.1, 10000.0),
    ParamSpec("lockstep", bool, True, "Publish the next frame only after the action for the current one "
              "(sim is always lockstep)."),
    ParamSpec("loop", bool, False, "Start again after the last segment (replay only)."),
    ParamSpec("max_frames", int, 0, "Stop after this many frames (sim: the report is then partial); 0 = all.",
              0, 100_000_000, read_only=True),
    ParamSpec("action_timeout_s", float, 2.0, "Lockstep: shortest wait before a frame whose action has not come "
              "is re-sent; the wait grows to 3x the recent action latency (wall clock).", 0.01, 600.0),
    ParamSpec("policy_timeout_s", float, 60.0, "Lockstep: give up (partial report, exit code 1) when a frame "
              "has had no action for this long.", 0.1, 86400.0),
    ParamSpec("instruction_timeout_s", float, 10.0, "Lockstep: longest wait for the policy to confirm a new "
              "instruction on `instruction_active` before the segment's first frame.", 0.1, 600.0),
    ParamSpec("instruction_settle_s", float, 0.05, "Pause after a new instruction before its first frame when "
              "no node publishes `instruction_active` (a policy without the handshake).", 0.0, 5.0),
    ParamSpec("start_timeout_s", float, 120.0, "How long to wait for the policy (a camera subscriber and an "
              "`action` publisher) before giving up with a report and exit code 1; 0 = start at once.",
              0.0, 3600.0, read_only=True),
    ParamSpec("sim_start", str, "chains", "sim: run LH-MTLC chains from CALVIN's initial states, or start from "
              "each selected recorded episode's first frame with its task.", choices=("chains", "episodes"),
              read_only=True),
    ParamSpec("eval_sequences", str, "", "sim: CALVIN's eval_sequences.json (a JSON list of [initial_state, "
              "[5 task names]]); '' = CALVIN's standard 1000 chains, generated by CALVIN's procedure.",
              read_only=True),
    ParamSpec("num_chains", int, 0, "sim: how many chains to run (the first N); 0 = all.", 0, 1_000_000,
              read_only=True),
    ParamSpec("calvin_path", str, "", "sim: a CALVIN checkout (or its new_playtable_validation.yaml) to take "
              "the evaluation instructions from; '' = the packaged copy.", read_only=True),
    ParamSpec("use_egl", bool, False, "sim: render with EGL (GPU) instead of the CPU renderer.", read_only=True),
    ParamSpec("report_path", str, "", "Write the evaluation JSON here at the end (sim: also an .svg plot); "
              "'' = do not.", read_only=True),
    ParamSpec("exit_when_done", bool, False, "Exit (code 0) after the last frame instead of idling; a failed run "
              "always exits (code 1).", read_only=True),
)
_SPECS = {spec.name: spec for spec in BRIDGE_PARAMETERS}


class PolicyLost(RuntimeError):
    """No policy answers (none started, or it stopped): the run ends with a partial report."""


class _Interrupted(Exception):
    """The node is shutting down (SIGINT): the run ends with a partial report."""


class _FrameBudget(_Interrupted):
    """max_frames reached in sim mode: the run ends there with a partial report."""


def sim_stamp(frame_counter: int) -> TimeMsg:
    ns = int(round(frame_counter * 1e9 / CALVIN_HZ))
    return TimeMsg(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


@dataclass
class _Pending:
    """A published frame waiting for the policy's action."""

    segment: int                      # segment index (replay, sim episodes) or subtask counter (sim chains)
    truth: np.ndarray | None          # recorded rel_action: published as expert_action
    lockstep: bool                    # someone waits for the answer (else it is dropped once scored)
    score: bool                       # replay: score the answer against `truth`
    sent_at: float                    # monotonic time of the first publication
    answer: EndEffectorAction | None = None


class LatencyWindow:
    """The recent action latencies; the lockstep re-send interval follows them, so a slow model is not sent the
    same frame again and again while it is still working on it."""

    def __init__(self, size: int = LATENCY_WINDOW) -> None:
        self._values: deque[float] = deque(maxlen=size)

    def add(self, seconds: float) -> None:
        self._values.append(seconds)

    def resend_interval(self, floor: float) -> float:
        """max(floor, RESEND_FACTOR x the 90th percentile of the recent latencies); `floor` until 3 are known."""
        if len(self._values) < 3:
            return floor
        return max(floor, RESEND_FACTOR * float(np.percentile(self._values, 90)))


class CalvinBridgeNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        declare(self, BRIDGE_PARAMETERS)
        self.add_on_set_parameters_callback(lambda ps: _result(check_changes(_SPECS, ps)))
        p = values(self, BRIDGE_PARAMETERS)
        self.mode = p["mode"]
        self.sim_start = p["sim_start"]
        if self.mode == "sim":
            _check_sim_parameters(p)
        self.split = open_split(p["dataset"], p["split"], p["bag_topics"])
        self.segments = self.split.select_segments(p["segments"])
        # Everything that can be wrong with the inputs is found now, before waiting for a policy.
        self.instructions, self.sequences = self._sim_inputs(p) if self.mode == "sim" else ({}, [])
        # sim: with the standard chains (eval_sequences '') self.sequences is None until the player made them
        self.sim = self._make_sim(p) if self.mode == "sim" else None
        self.evaluator = OpenLoopEvaluator()
        self._pub_static = self.create_publisher(Image, "camera/static/image_raw", STREAM)
        self._pub_gripper = self.create_publisher(Image, "camera/gripper/image_raw", STREAM)
        self._pub_instruction = self.create_publisher(String, "instruction", LATCHED)
        self._pub_expert = self.create_publisher(EndEffectorAction, "expert_action", STREAM)
        self._pub_clock = self.create_publisher(Clock, "/clock", STREAM)
        self._pub_eval = self.create_publisher(String, "evaluation", LATCHED)
        self.create_subscription(EndEffectorAction, "action", self._on_action, STREAM)
        self.create_subscription(InstructionStatus, "instruction_active", self._on_instruction_active, LATCHED)
        self._pending: dict[int, _Pending] = {}  # stamp (ns) -> frame awaiting an action
        self._answered = threading.Condition()
        self._status: tuple[str, int] = ("", 0)  # the last InstructionStatus heard: (text, sequence)
        self.latency = LatencyWindow()
        self.counter = 0          # frames published (sim time = counter / 30 Hz)
        self.frames_sent = 0
        self.resends = 0
        self.lost = 0             # free-running frames forgotten unanswered (MAX_UNANSWERED)
        self.invalid_actions = 0  # replay: actions with NaN/Inf or a bad compute record, not scored
        self.unconfirmed_instructions = 0  # instruction_active did not confirm within instruction_timeout_s
        self._warned_no_handshake = False
        self.budgets_seen: set[float] = set()  # the policy's flops_budget as its actions report it
        self.failed: str | None = None
        self.partial: str | None = None  # why the run stopped early (then the report is partial)
        self.chains: list = []    # sim chains: ChainResult, appended as they start
        self.episodes: list = []  # sim episodes: EpisodeResult
        self.result: dict = {}
        self.done = threading.Event()
        self._stop = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._play, name="calvin_bridge_player", daemon=True)
        pace = "lockstep" if p["lockstep"] or self.mode == "sim" else f"{p['rate_hz']} Hz"
        if self.mode == "replay":
            what = f"{len(self.segments)} segments"
        elif self.sim_start == "episodes":
            what = f"{len(self.segments)} recorded episodes rerun in calvin_env"
        else:
            what = (f"{len(self.sequences)} LH-MTLC chains" if self.sequences is not None
                    else "CALVIN's standard LH-MTLC chains") + " in calvin_env"
        self.get_logger().info(f"{self.mode}: {what} from {self.split.path} ({pace})")

    def _sim_inputs(self, p: dict) -> tuple[dict[str, str], list | None]:
        from deer_ros.calvin.protocol import canonical_instructions, load_eval_sequences, load_validation_instructions

        instructions = load_validation_instructions(p["calvin_path"]) if p["calvin_path"] else canonical_instructions()
        if self.sim_start == "episodes":
            unlabelled = [i for i, s in self.segments if not s.task or not s.instruction]
            if unlabelled:
                raise ProtocolError(f"{self.split.path}: segment(s) {unlabelled} have no task or instruction; "
                                    "sim_start episodes needs annotated episodes (lang_annotations)")
            return instructions, []
        if p["eval_sequences"].strip():
            return instructions, load_eval_sequences(p["eval_sequences"], limit=p["num_chains"] or None,
                                                     known_tasks=instructions)
        return instructions, None  # CALVIN's standard set: generated by the player (a minute, once), see _play

    def _make_sim(self, p: dict):
        from deer_ros.calvin.sim import CalvinSim

        # raises CalvinEnvMissing with install instructions
        return CalvinSim(self.split.path, use_egl=p["use_egl"])

    def start(self) -> None:
        self._thread.start()

    # ---------------------------------------------------------------- policy answers
    def _on_action(self, msg: EndEffectorAction) -> None:
        key = stamp_ns(msg.header.stamp)
        with self._answered:
            pending = self._pending.get(key)
            if pending is None or pending.answer is not None:
                return  # an answer to a re-sent frame, or from another run
            pending.answer = msg
            self.latency.add(time.monotonic() - pending.sent_at)
            self.budgets_seen.add(round(float(msg.flops_budget), 6))
            if not pending.lockstep:
                del self._pending[key]
            self._answered.notify_all()
        if pending.score:
            predicted = np.concatenate([msg.translation, msg.rotation, [msg.gripper]]).astype(np.float32)
            try:
                self.evaluator.add(pending.segment, predicted, pending.truth, int(msg.exit_index), int(msg.layers),
                                   float(msg.gflops))
            except ValueError as exc:  # NaN action or a bad compute record: counted, never scored
                self.invalid_actions += 1
                self.get_logger().error(f"invalid action for the frame at t={key / 1e9:.3f} s, not scored: {exc}",
                                        throttle_duration_sec=5.0)

    def _on_instruction_active(self, msg: InstructionStatus) -> None:
        with self._answered:
            self._status = (msg.text, int(msg.sequence))
            self._answered.notify_all()

    # ---------------------------------------------------------------- playback
    def _play(self) -> None:
        try:
            if self.mode == "sim" and self.sim_start == "chains" and self.sequences is None:
                from deer_ros.calvin.sequences import cached_standard_sequences

                self.get_logger().info("eval_sequences '': CALVIN's standard 1000 chains (generated once, then "
                                       "cached)")
                self.sequences = cached_standard_sequences()[:self.get_parameter("num_chains").value or None]
            self._wait_for_policy()
            if self.mode == "replay":
                self._run_replay()
            elif self.sim_start == "episodes":
                self._run_sim_episodes()
            else:
                self._run_sim_chains()
        except _FrameBudget:
            self.partial = f"max_frames reached ({self.counter} frames)"
        except _Interrupted:
            self.partial = "interrupted (shutdown requested)"
        except Exception as exc:  # noqa: BLE001 - report what ran, then end the run instead of dying silently
            if self._stop.is_set():
                self.partial = "interrupted (shutdown requested)"
            else:
                self.failed = f"{type(exc).__name__}: {exc}"
                self.partial = self.failed
                self.get_logger().error(f"{self.mode} failed: {self.failed}")
        finally:
            try:
                self._finish()
            finally:
                self.done.set()

    def _check_stop(self) -> None:
        if self._stop.is_set():
            raise _Interrupted()

    def _wait_for_policy(self) -> None:
        """Wait (up to start_timeout_s) until someone subscribes to the cameras and offers `action`; say what is
        missing after POLICY_HINT_S, and give up with PolicyLost at the timeout."""
        timeout = self.get_parameter("start_timeout_s").value
        started = time.monotonic()

        def missing() -> list[str]:
            out = []
            if self._pub_static.get_subscription_count() == 0:
                out.append(f"nobody subscribes to {self._pub_static.topic_name}")
            if self.count_publishers(self.resolve_topic_name("action")) == 0:
                out.append(f"nobody publishes {self.resolve_topic_name('action')}")
            return out

        while timeout and missing():
            self._check_stop()
            waited = time.monotonic() - started
            if waited > timeout:
                raise PolicyLost(f"no policy after {timeout:.0f} s (start_timeout_s): {'; '.join(missing())}. "
                                 "Start deer_policy_node (with use_sim_time true) in the same ROS domain")
            if waited > POLICY_HINT_S:
                self.get_logger().warning(f"waiting for a policy ({waited:.0f} of {timeout:.0f} s): "
                                          f"{'; '.join(missing())}", throttle_duration_sec=5.0)
            self._stop.wait(0.05)
        # A policy with the handshake latches its current instruction: hear it before the first announcement,
        # so that an old confirmation is not taken for a new one.
        deadline = time.monotonic() + 1.0
        while self._handshake_peers() and self._status[1] == 0 and time.monotonic() < deadline:
            self._stop.wait(0.02)

    def _handshake_peers(self) -> int:
        return self.count_publishers(self.resolve_topic_name("instruction_active"))

    def _frame_budget_left(self) -> bool:
        max_frames = self.get_parameter("max_frames").value
        return not max_frames or self.counter < max_frames

    def _run_replay(self) -> None:
        while True:
            for seg_index, segment in self.segments:
                self._announce(segment.instruction)
                next_time = time.monotonic()
                for index in segment.frames:
                    self._check_stop()
                    if not self._frame_budget_left():
                        return
                    frame = self.split.frame(index, keys=())  # cameras and rel_actions only
                    truth = frame.rel_actions.astype(np.float32)
                    if not np.all(np.isfinite(truth)):
                        truth = None  # a bag played without an action topic: nothing to publish or score
                    if self.get_parameter("lockstep").value:
                        self._exchange(seg_index, frame.rgb_static, frame.rgb_gripper, truth, score=truth is not None)
                    else:
                        self._publish(seg_index, frame.rgb_static, frame.rgb_gripper, truth, lockstep=False,
                                      score=truth is not None)
                        next_time += 1.0 / self.get_parameter("rate_hz").value
                        self._stop.wait(max(0.0, next_time - time.monotonic()))
            if not self.get_parameter("loop").value:
                return

    def _run_sim_chains(self) -> None:
        from deer_ros.calvin.protocol import run_lh_mtlc

        def progress(i: int, chain) -> None:
            faults = [s.fault for s in chain.subtasks if s.fault]
            self.get_logger().info(f"chain {i + 1}/{len(self.sequences)}: {chain.successes}/5 subtasks"
                                   + (f" (failed on an invalid action: {faults[0]})" if faults else ""))

        run_lh_mtlc(self.sim, _RosChainPolicy(self), self.sequences, self.instructions, on_chain=progress,
                    results=self.chains)

    def _run_sim_episodes(self) -> None:
        from deer_ros.calvin.protocol import run_subtask
        from deer_ros.calvin.report import EpisodeResult

        for seg_index, segment in self.segments:
            first = self.split.frame(segment.start, keys=("robot_obs", "scene_obs"))
            obs = self.sim.reset(first.robot_obs, first.scene_obs)
            recorded = [self.split.frame(i, keys=()).rel_actions for i in segment.frames]
            policy = _RosChainPolicy(self, recorded=recorded, segment=seg_index)
            result, _ = run_subtask(self.sim, policy, obs, segment.task, segment.instruction)
            self.episodes.append(EpisodeResult(seg_index, segment.start, result))
            self.get_logger().info(f"episode {seg_index} ({segment.task}): "
                                   f"{'solved' if result.success else 'not solved'} in {result.steps} steps"
                                   + (f" ({result.fault})" if result.fault else ""))

    def _announce(self, instruction: str) -> None:
        """Publish a (new) instruction and, in lockstep, wait until the policy confirms it has applied it (an
        InstructionStatus with this text and a new sequence number), so no frame of the segment meets the old
        instruction or history. A policy without the handshake gets a settle delay instead."""
        with self._answered:
            seen = self._status[1]
        self._pub_instruction.publish(String(data=instruction))
        lockstep = self.mode == "sim" or self.get_parameter("lockstep").value
        if not lockstep or not self._handshake_peers():
            if lockstep and not self._warned_no_handshake:
                self._warned_no_handshake = True
                self.get_logger().warning(
                    f"no node publishes {self.resolve_topic_name('instruction_active')}: the policy cannot confirm "
                    f"a new instruction, so each segment starts after instruction_settle_s "
                    f"({self.get_parameter('instruction_settle_s').value} s) instead")
            self._stop.wait(self.get_parameter("instruction_settle_s").value)
            self._check_stop()
            return
        timeout = self.get_parameter("instruction_timeout_s").value
        with self._answered:
            confirmed = self._answered.wait_for(
                lambda: self._stop.is_set() or (self._status[0] == instruction and self._status[1] > seen), timeout)
        self._check_stop()
        if not confirmed:
            self.unconfirmed_instructions += 1
            self.get_logger().warning(f"the policy did not confirm the instruction {instruction!r} within "
                                      f"{timeout} s (instruction_timeout_s); going on")

    def _publish(self, segment: int, static: np.ndarray, gripper: np.ndarray, truth: np.ndarray | None,
                 lockstep: bool = True, score: bool = False) -> tuple[int, TimeMsg]:
        stamp = sim_stamp(self.counter)
        key = stamp_ns(stamp)
        with self._answered:
            self._pending[key] = _Pending(segment, truth, lockstep, score, time.monotonic())
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
                  truth: np.ndarray | None, score: bool = False) -> EndEffectorAction:
        """Lockstep: publish a frame and wait for its action. It is re-sent when the answer is overdue (after
        the latency-based interval) and PolicyLost is raised after policy_timeout_s without an answer."""
        key, stamp = self._publish(segment, static, gripper, truth, score=score)
        policy_timeout = self.get_parameter("policy_timeout_s").value
        with self._answered:
            pending = self._pending[key]
            while True:
                interval = self.latency.resend_interval(self.get_parameter("action_timeout_s").value)
                waited = time.monotonic() - pending.sent_at
                wait = min(interval, policy_timeout - waited)
                if self._answered.wait_for(lambda: pending.answer is not None or self._stop.is_set(), wait):
                    self._check_stop()
                    return self._pending.pop(key).answer
                waited = time.monotonic() - pending.sent_at
                if waited >= policy_timeout:
                    del self._pending[key]
                    raise PolicyLost(f"no action for the frame at t={key / 1e9:.3f} s after {waited:.0f} s "
                                     f"(policy_timeout_s): the policy stopped answering")
                self.resends += 1
                self.get_logger().warning(f"no action for the frame at t={key / 1e9:.3f} s after {waited:.1f} s: "
                                          "re-sending (is the policy running, and in this ROS domain?)",
                                          throttle_duration_sec=5.0)
                self._send(static, gripper, truth, stamp)

    def _finish(self) -> None:
        if self.mode == "replay" and not self.partial:
            # Free-running: give the last answers a moment to arrive.
            deadline = time.monotonic() + 2.0
            while self.unanswered and time.monotonic() < deadline and not self._stop.wait(0.02):
                pass
        summary = self.summary()
        path = self.get_parameter("report_path").value
        if path:
            if self.mode == "sim":
                from deer_ros.calvin.report import write_report

                written = write_report(summary, path)
            else:
                Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
                Path(path).expanduser().write_text(json.dumps(summary, indent=2))
                written = [Path(path)]
            self.get_logger().info(f"report: {', '.join(map(str, written))}")
        try:
            self._pub_eval.publish(String(data=json.dumps(summary)))
        except Exception:  # noqa: BLE001 - the context is gone at shutdown; the file above has the report
            pass
        if self.mode == "sim":
            from deer_ros.calvin.report import summary_text

            self.get_logger().info(summary_text(summary))
        self.get_logger().info(f"done: {self.frames_sent} frames, {self.unanswered} unanswered, "
                               f"{self.resends} re-sent" + (f"; partial: {self.partial}" if self.partial else ""))

    @property
    def unanswered(self) -> int:
        with self._answered:
            return sum(p.answer is None for p in self._pending.values())

    def _bridge_stats(self) -> dict:
        return {"mode": self.mode, "frames_sent": self.frames_sent, "unanswered": self.unanswered,
                "resends": self.resends, "lost": self.lost, "invalid_actions": self.invalid_actions,
                "unconfirmed_instructions": self.unconfirmed_instructions, "dataset": str(self.split.path),
                "resend_interval_s": self.latency.resend_interval(self.get_parameter("action_timeout_s").value)}

    def summary(self) -> dict:
        if self.mode == "sim":
            from deer_ros.calvin.report import chains_report, episodes_report

            with self._answered:
                budgets = sorted(self.budgets_seen)
            settings = {**values(self, BRIDGE_PARAMETERS), "instructions": self.get_parameter("calvin_path").value
                        or "packaged new_playtable_validation.yaml (deer_ros/calvin/assets)",
                        "eval_sequences": self.get_parameter("eval_sequences").value
                        or "CALVIN's standard 1000, generated",
                        "policy_flops_budgets": budgets}
            make = episodes_report if self.sim_start == "episodes" else chains_report
            report = make(self.episodes if self.sim_start == "episodes" else self.chains, settings,
                          partial=self.partial is not None, reason=self.partial)
        else:
            report = self.evaluator.to_json(segment_names={i: s.instruction for i, s in self.segments})
            report["partial"] = self.partial is not None
            report["reason"] = self.partial
        report["bridge"] = self._bridge_stats()
        return report

    def stop(self) -> None:
        """End the run (a partial report is written if it was not finished) and wait for the player thread."""
        self._stop.set()
        with self._answered:
            self._answered.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=30.0)

    def close(self) -> None:
        self.stop()
        if self.sim is not None:
            self.sim.close()
        if not self._closed:
            self._closed = True
            self.destroy_node()


def _check_sim_parameters(p: dict) -> None:
    """Replay-only settings are refused in sim mode instead of being ignored."""
    problems = []
    if p["dataset"] and is_bag(p["dataset"]):
        problems.append(f"dataset {p['dataset']} (a bag: the simulator starts from recorded robot and scene states, "
                        "which a bag does not hold; replay it with mode replay)")
    if not p["lockstep"]:
        problems.append("lockstep false (the simulator waits for each action: sim is always lockstep)")
    if p["loop"]:
        problems.append("loop true (an evaluation runs its chains once; run the bridge again to repeat it)")
    if p["rate_hz"] != _SPECS["rate_hz"].default:
        problems.append(f"rate_hz {p['rate_hz']} (sim runs as fast as the policy answers; rate_hz paces "
                        "free-running replay only)")
    if p["segments"].strip() and p["sim_start"] == "chains":
        problems.append(f"segments {p['segments']!r} (chains come from eval_sequences and num_chains; segments "
                        "select recorded episodes with sim_start episodes)")
    if problems:
        raise ParameterError("mode sim does not take: " + "; ".join(problems))


class _RosChainPolicy:
    """The protocol's policy: whatever node answers on `action`, reached through the bridge's topics.
    With `recorded` actions (sim episodes), step i publishes recorded[i] as `expert_action` alongside the frame."""

    def __init__(self, bridge: CalvinBridgeNode, recorded: list[np.ndarray] | None = None,
                 segment: int | None = None) -> None:
        self.bridge = bridge
        self.recorded = recorded
        self.subtask = 0 if segment is None else segment
        self._counted_subtasks = segment is None
        self._step = 0
        self._announced = False

    def reset(self) -> None:
        if self._counted_subtasks:
            self.subtask += 1
        self._step = 0
        self._announced = False  # the next act() publishes the instruction, which resets the policy's history

    def act(self, obs, instruction: str):
        if not self.bridge._frame_budget_left():
            raise _FrameBudget()
        if not self._announced:
            self.bridge._announce(instruction)
            self._announced = True
        truth = None
        if self.recorded is not None and self._step < len(self.recorded):
            truth = np.asarray(self.recorded[self._step], dtype=np.float32)
        self._step += 1
        msg = self.bridge._exchange(self.subtask, obs.rgb_static, obs.rgb_gripper, truth)
        action = np.concatenate([msg.translation, msg.rotation, [msg.gripper]]).astype(np.float64)
        return _Step(action, float(msg.gflops), int(msg.layers), int(msg.exit_index))


@dataclass
class _Step:
    action: np.ndarray
    gflops: float
    layers: int
    exit_index: int


def _result(reason: str | None):
    from rcl_interfaces.msg import SetParametersResult

    return SetParametersResult(successful=reason is None, reason=reason or "")


def _run(node: CalvinBridgeNode) -> int:
    node.start()
    exit_when_done = node.get_parameter("exit_when_done").value
    try:
        while rclpy.ok() and not ((exit_when_done or node.failed) and node.done.is_set()):
            rclpy.spin_once(node, timeout_sec=0.1)
    finally:
        node.stop()  # Ctrl-C mid-run: the player writes a partial report before the node goes
    return 1 if node.failed else 0


def main(args: list[str] | None = None) -> int:
    return run_node(NODE_NAME, CalvinBridgeNode, _run, args,
                    fatal=(CalvinDatasetError, CalvinEnvMissing, ProtocolError, FileNotFoundError, MissingDependency),
                    parameters=BRIDGE_PARAMETERS)


if __name__ == "__main__":
    raise SystemExit(main())
