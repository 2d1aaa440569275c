"""deer_policy: cameras and instruction in, end-effector actions out, under a compute budget set at run time.

A managed (lifecycle) node: configure loads the model and the calibration, activate starts acting, deactivate
stops publishing, cleanup frees the model. With `autostart` (default) it configures and activates itself.

Threads: the executor runs the subscriptions, services and parameter callbacks; they validate, store and answer
at once, and never wait for inference. One worker thread owns the policy: it runs the model on the newest image
pair and, between steps, applies what the callbacks queued (instruction, reset, budget change), so an
instruction and the history it resets always change together, and a step never sees one without the other.

One action per observation: a pair whose stamps were already acted on (a lockstep re-send) is dropped and
counted, so the recurrent history advances exactly once per observation. After applying an instruction the
worker publishes InstructionStatus on `instruction_active` (latched); a pair that arrived before the
instruction in force was received is dropped, so a peer that waits for the status before sending the frames of a
new task never has them scored against the previous instruction.
"""
from __future__ import annotations

import threading
import time
import unicodedata
from collections import Counter, OrderedDict, deque
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.time import Time
from sensor_msgs.msg import Image
from std_msgs.msg import String
from std_srvs.srv import Trigger

from deer_ros.exits import solver
from deer_ros.exits.calibration import Calibration, CalibrationError, calibration_for
from deer_ros.exits.controller import LATENCY_FIELDS, MAX_LATENCY_MS, BudgetSettings, ExitBudget, refusal
from deer_ros.exits.costs import CostTable
from deer_ros.msg import EndEffectorAction, InstructionStatus
from deer_ros.ros.image import ImageConverter, ImageError, ImageLimits
from deer_ros.ros.node_main import run_node
from deer_ros.ros.pairing import GRIPPER, STATIC, Pair, StampPairer
from deer_ros.ros.params import ParamSpec, check_changes, declare, values
from deer_ros.ros.qos import LATCHED, SENSOR
from deer_ros.stamps import stamp_ns

NODE_NAME = "deer_policy"
BUDGET_PARAMETERS = ("flops_budget", "max_exit", "exit_ratio", "thresholds", "criterion", "budget_tracking",
                     "latency_budget_ms", "latency_cap_ms")
MAX_FLOPS_BUDGET = 10000.0

POLICY_PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec("flops_budget", float, 0.0, "Target average LLM GFLOPs per action; 0 = no average budget "
              "(exit_ratio decides). Below the cheapest exit is refused; above what the allowed exits can spend "
              "means: run every allowed exit.", 0.0, MAX_FLOPS_BUDGET),
    ParamSpec("max_exit", int, 0, "Highest exit that may run (peak compute cap); 0 = all built exits.", 0, 64),
    ParamSpec("exit_ratio", float, 1.0, "DeeR geometric exit-rate parameter (<1 favours early exits), used when "
              "flops_budget is 0.", 0.05, 20.0),
    ParamSpec("thresholds", list, [], "Explicit per-exit thresholds; non-empty overrides flops_budget and "
              "exit_ratio. One value per allowed exit (the last is ignored: the last exit always stops)."),
    ParamSpec("criterion", str, "action_consistency", "Exit criterion."),
    ParamSpec("budget_tracking", bool, True, "Correct thresholds online so the realised average GFLOPs "
              "follows flops_budget."),
    ParamSpec("latency_budget_ms", float, 0.0, "Target average time (ms) from an image pair's arrival to its "
              "action's publication, met by choosing the exit from the learned time cost of each exit; 0 = off. "
              "With flops_budget also set, the tighter binds. Below the learned cost of exit 1 is refused.",
              0.0, MAX_LATENCY_MS),
    ParamSpec("latency_cap_ms", float, 0.0, "Peak form: the deepest exit allowed is the deepest whose learned "
              "(median) cost fits in this many ms; 0 = off. Caps the typical step, not every step's jitter.",
              0.0, MAX_LATENCY_MS),
    ParamSpec("model", str, "tiny", "Model preset.", choices=("tiny", "of3b", "of9b"), read_only=True),
    ParamSpec("checkpoint", str, "", "Checkpoint file; '' = the bundled tiny demo checkpoint.", read_only=True),
    ParamSpec("calibration", str, "", "Calibration file for the threshold solver; '' = the one bundled with "
              "the demo checkpoint.", read_only=True),
    ParamSpec("device", str, "cpu", "Torch device: cpu, cuda or cuda:N.", read_only=True),
    ParamSpec("dtype", str, "fp32", "Weights and compute dtype.", choices=("fp32", "fp16", "bf16", "int8"),
              read_only=True),
    ParamSpec("memory_budget_mb", int, 0, "Build only the LLM layers whose weights fit (MB); 0 = no limit.",
              0, 10_000_000, read_only=True),
    ParamSpec("cpu_threads", int, 0, "Torch CPU threads for inference; 0 = torch's default (one per core). "
              "Fewer than the cores when other processes share them: oversubscribed threads spin-wait.",
              0, 1024, read_only=True),
    ParamSpec("autostart", bool, True, "Configure and activate at start (no lifecycle manager needed).",
              read_only=True),
    ParamSpec("pair_slop_s", float, 0.02, "Largest stamp difference between a static and a gripper image "
              "that are paired.", 0.0, 1.0),
    ParamSpec("camera_timeout_s", float, 1.0, "Node-clock age after which images are stale: no more actions "
              "and diagnostics ERROR.", 0.01, 60.0),
    ParamSpec("max_image_pixels", int, ImageLimits.max_pixels, "Largest image accepted (width * height); "
              "larger ones are refused and counted. The default fits 4096x2160.", 1, 16384 * 16384),
    ParamSpec("max_image_aspect", float, ImageLimits.max_aspect, "Largest long-side / short-side ratio "
              "accepted; the model resizes the short side, so this bounds the resize's memory.", 1.0, 1000.0),
    ParamSpec("max_instruction_chars", int, 1000, "Longest instruction accepted (characters).", 1, 1_000_000),
    ParamSpec("diagnostics_period_s", float, 1.0, "Period of /diagnostics messages.", 0.1, 60.0, read_only=True),
    ParamSpec("simulated_step_delay_s", float, 0.0, "Testing aid: sleep this long inside every step, after the "
              "model ran, to reproduce a slow model (of3b on a CPU) with the tiny one. 0 = off.", 0.0, 600.0,
              read_only=True),
)
# Vision-token reuse (deer_ros/model/vision_reuse.py), changeable at run time; off unless vision_reuse is true.
VISION_REUSE_PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec("vision_reuse", bool, False, "Reuse a camera's vision tokens while its image has barely changed "
              "since it was last encoded (saves that camera's ViT + perceiver). Off by default."),
    ParamSpec("vision_reuse_threshold_static", float, 2.0, "Largest change of the static image (mean absolute "
              "difference of a ~32x32 grayscale thumbnail, grey levels 0..255) that reuses its tokens; 0 = always "
              "encode it.", 0.0, 255.0),
    ParamSpec("vision_reuse_threshold_gripper", float, 0.0, "As vision_reuse_threshold_static, for the gripper "
              "camera (it moves with the arm; 0 = always encode it).", 0.0, 255.0),
    ParamSpec("vision_reuse_max_age_static", int, 3, "Most consecutive steps one static encoding is reused.",
              0, 1000),
    ParamSpec("vision_reuse_max_age_gripper", int, 3, "Most consecutive steps one gripper encoding is reused.",
              0, 1000),
)
POLICY_PARAMETERS += VISION_REUSE_PARAMETERS
VISION_REUSE_NAMES = frozenset(spec.name for spec in VISION_REUSE_PARAMETERS)
_SPECS = {spec.name: spec for spec in POLICY_PARAMETERS}

_PROCESSED_MEMORY = 1024  # observations remembered for "one action per observation"
_SHOWN_CHARS = 200  # instruction text shown in logs and diagnostics


def visible(text: str) -> bool:
    """Whether `text` has a character a reader sees (not only spaces, controls, format or combining marks)."""
    return any(unicodedata.category(c)[0] not in "CZ" and unicodedata.category(c) not in ("Mn", "Me")
               for c in text)


def shown(text: str) -> str:
    return text if len(text) <= _SHOWN_CHARS else f"{text[:_SHOWN_CHARS]}... ({len(text)} chars)"


def vision_reuse_settings(p: dict):
    """The policy's VisionReuse from the node parameters (static, gripper)."""
    from deer_ros.model.vision_reuse import CameraReuse, VisionReuse

    if not p["vision_reuse"]:
        return VisionReuse()
    return VisionReuse(tuple(CameraReuse(p[f"vision_reuse_threshold_{camera}"], p[f"vision_reuse_max_age_{camera}"])
                             for camera in (STATIC, GRIPPER)))


def effective_budget(settings: dict, exit_gflops) -> tuple[dict, float | None]:
    """The budget settings the controller gets: a flops_budget above what exits 1..cap can spend becomes that
    maximum (a budget is a ceiling: run every allowed exit). Returns (settings, the maximum when it applied)."""
    g = np.asarray(exit_gflops, dtype=np.float64)
    flops, cap = float(settings["flops_budget"]), int(settings["max_exit"]) or len(g)
    if flops > 0 and 1 <= cap <= len(g):
        hi = solver.budget_range(g, cap)[1]
        if flops > hi:
            return {**settings, "flops_budget": hi}, hi
    return settings, None


class DeerPolicyNode(LifecycleNode):
    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        declare(self, POLICY_PARAMETERS)
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self._converter = ImageConverter(limits=self._image_limits())
        self._pairer = StampPairer(slop_ns=int(self._param("pair_slop_s") * 1e9))
        self._policy = None
        self._budget: ExitBudget | None = None
        # (exit GFLOPs, calibration) of the loaded model; kept after cleanup (the model parameters are read-only,
        # so the next configure loads the same exits) to check budget changes while unconfigured
        self._reference: tuple[np.ndarray, Calibration | None] | None = None
        self._model_lock = threading.Lock()  # the policy and budget: held by the worker, and by cleanup
        self._commands: deque = deque()  # (kind, payload) queued by callbacks, applied by the worker between steps
        # owned by the worker: the instruction in force, when it was received, the observations acted on
        self._instruction = ""
        self._instruction_received_ns = 0
        self._instruction_sequence = 0
        self._processed: OrderedDict = OrderedDict()
        self._budget_report: dict[str, str] = {}
        self._cost_table: CostTable | None = None  # the worker's latest snapshot, for the parameter callbacks
        self._latency_note = ""
        self._latency_unmet = False  # the worker's latest ExitBudget.latency_unmet, for diagnostics
        self._active = False
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self._last_image_ns = {STATIC: None, GRIPPER: None}  # node clock
        self._counts: Counter = Counter()
        self._exit_hist: Counter = Counter()
        self._latency_ms: deque = deque(maxlen=500)
        self._overhead_ms: deque = deque(maxlen=500)
        self._last_action_ns = 0  # monotonic
        self._last_failure_ns = 0  # monotonic: the latest step error or non-finite output
        self._duplicate_name = False
        self._io: list = []
        self._action_pub = None
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._status_pub = self.create_publisher(InstructionStatus, "instruction_active", LATCHED)
        # the reset service lives as long as the node, so that it can say "no model loaded" when unconfigured
        self._reset_srv = self.create_service(Trigger, "~/reset", self._on_reset)
        # Diagnostics on the steady clock: they must keep coming when sim time stops (a paused simulator).
        self._diag_timer = self.create_timer(self._param("diagnostics_period_s"), self._publish_diagnostics,
                                             clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._last_error = ""
        self._calibration_warning = ""

    # ---------------------------------------------------------------- lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._load()
        except Exception as exc:  # noqa: BLE001 - any failure must reach the log in one line, not a traceback
            self._last_error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, (OSError, ValueError)) \
                else str(exc)
            if self.context.ok():
                self.get_logger().error(f"configure failed: {self._last_error}")
            self._release()
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def _load(self) -> None:
        from deer_ros.model.factory import load_policy  # torch is imported only when a model is loaded

        p = values(self, POLICY_PARAMETERS)
        if p["cpu_threads"]:
            import torch

            torch.set_num_threads(p["cpu_threads"])
        checkpoint = _readable(p["checkpoint"], "checkpoint") if p["checkpoint"] else None
        calibration = self._load_calibration(p)
        try:
            # max_exit is a run-time cap (it can be raised again), so every exit that fits memory_budget_mb is
            # built; only memory_budget_mb leaves layers out.
            policy = load_policy(checkpoint=checkpoint, preset=p["model"], device=p["device"], dtype=p["dtype"],
                                 memory_budget_mb=p["memory_budget_mb"] or None)
        except (OSError, ValueError):
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. IndexError from a file that is no checkpoint at all
            raise ValueError(f"checkpoint {checkpoint or 'bundled demo'} could not be loaded "
                             f"({type(exc).__name__}: {exc}): is it a deer_ros or DeeR checkpoint?") from None
        policy.set_vision_reuse(vision_reuse_settings(p))
        settings = {k: p[k] for k in BUDGET_PARAMETERS}
        budget = ExitBudget.create(policy.exits, calibration, {**settings, "flops_budget": 0.0})
        reference = (budget.exit_gflops, budget.calibration)
        budget.apply(self._effective(settings, reference))
        if not self.context.ok():
            raise RuntimeError("shutting down")
        with self._model_lock:
            self._policy, self._budget, self._reference = policy, budget, reference
            self._budget_report = budget.report()
            self._cost_table = budget.cost_table()
        self._advertise_ranges(reference)
        self._action_pub = self.create_lifecycle_publisher(EndEffectorAction, "action", 10)
        self._io = [
            self.create_subscription(Image, "camera/static/image_raw", lambda m: self._on_image(STATIC, m),
                                     SENSOR),
            self.create_subscription(Image, "camera/gripper/image_raw", lambda m: self._on_image(GRIPPER, m),
                                     SENSOR),
            self.create_subscription(String, "instruction", self._on_instruction, LATCHED),
        ]
        self._stop.clear()
        self._commands.clear()  # budget changes made while unconfigured are already in the parameters just read
        self._worker = threading.Thread(target=self._run_worker, name="deer_policy_worker", daemon=True)
        self._worker.start()
        exits = ", ".join(f"{e.index}:{e.layers}L/{e.gflops:.3g}G" for e in policy.exits)
        self.get_logger().info(f"loaded {p['model']} on {p['device']} ({p['dtype']}); exits {exits}; "
                               f"{budget.describe()}")

    def _load_calibration(self, p: dict) -> Calibration | None:
        """The calibration file given, or the one inside the model folder (the bundled demo model's by default)."""
        given = _readable(p["calibration"], "calibration") if p["calibration"] else ""
        try:
            calibration, self._calibration_warning = calibration_for(p["checkpoint"], given)
        except CalibrationError:
            raise
        except Exception as exc:  # noqa: BLE001 - a truncated zip raises BadZipFile, without the path
            raise CalibrationError(f"{given or 'the model folder calibration'}: not a readable calibration file "
                                   f"({type(exc).__name__}: {exc}); create one with `deer-ros calibrate`") from None
        if calibration is None:
            self.get_logger().warning("no calibration file: flops_budget and exit_ratio cannot be solved; "
                                      "explicit thresholds and max_exit still work")
        if self._calibration_warning:
            self.get_logger().warning(self._calibration_warning)
        return calibration

    def _advertise_ranges(self, reference) -> None:
        """`ros2 param describe` shows what this model accepts: max_exit up to its exits, and the budgets."""
        g = reference[0]
        lo, hi = solver.budget_range(g, None)
        self.set_descriptor("max_exit", _SPECS["max_exit"].descriptor(0, len(g), f" This model: 0..{len(g)}."))
        self.set_descriptor("flops_budget", _SPECS["flops_budget"].descriptor(
            note=f" This model: 0, or {lo:.4g}..{MAX_FLOPS_BUDGET:g} (at most {hi:.4g} is spent)."))

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = True
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _release(self) -> None:
        self._active = False
        self._stop.set()
        self._pairer.wake()
        if self._worker is not None:
            self._worker.join(timeout=10.0)
            self._worker = None
        for entity in self._io:
            self.destroy_subscription(entity)
        self._io = []
        if self._action_pub is not None:
            self.destroy_lifecycle_publisher(self._action_pub)
            self._action_pub = None
        with self._model_lock:
            device = getattr(self._policy, "device", None)
            self._policy = None
            self._budget = None
            self._commands.clear()
        if device is not None and str(device).startswith("cuda"):
            import torch

            torch.cuda.empty_cache()
        self._pairer.clear()

    def start(self) -> bool:
        """Configure and activate when `autostart` is set; False if configuring failed."""
        if not self._param("autostart"):
            self.get_logger().info("autostart is false: waiting for lifecycle transitions")
            return True
        self.trigger_configure()
        if self._policy is None:
            return False
        self.trigger_activate()
        return True

    # ---------------------------------------------------------------- inputs (executor thread: never wait)
    def _image_limits(self) -> ImageLimits:
        return ImageLimits(max_pixels=self._param("max_image_pixels"), max_aspect=self._param("max_image_aspect"))

    def _on_image(self, camera: str, msg: Image) -> None:
        arrived_ns = time.monotonic_ns()  # before conversion: latency_budget_ms counts it
        stamp = stamp_ns(msg.header.stamp)
        try:
            if stamp is None:
                raise ImageError(f"invalid stamp {msg.header.stamp.sec} s {msg.header.stamp.nanosec} ns: stamps "
                                 "must be >= 0 with nanosec < 1e9")
            rgb = self._converter.to_rgb(msg)
        except ImageError as exc:
            self._counts[f"bad_{camera}_images"] += 1
            self._last_error = f"{camera} image refused: {exc}"
            self.get_logger().warning(self._last_error, throttle_duration_sec=2.0)
            return
        now = self.get_clock().now().nanoseconds
        self._last_image_ns[camera] = now
        self._counts[f"{camera}_images"] += 1
        if self._pairer.add(camera, stamp, rgb, arrived_ns, msg.header.frame_id):
            self.get_logger().warning("both cameras went back in time (simulator reset?): history cleared")

    def _on_instruction(self, msg: String) -> None:
        text = msg.data.strip()
        limit = self._param("max_instruction_chars")
        reason = None
        if not text:
            self._counts["empty_instructions"] += 1
            reason = "empty instruction refused"
        elif not visible(text):
            self._counts["invisible_instructions"] += 1
            reason = f"instruction of {len(text)} invisible characters refused"
        elif len(text) > limit:
            self._counts["long_instructions"] += 1
            reason = f"instruction of {len(text)} characters refused (max_instruction_chars = {limit})"
        if reason:
            self._last_error = f"{reason}; the previous instruction stays in force"
            self.get_logger().warning(self._last_error)
            return
        self._counts["instructions_received"] += 1
        self._queue("instruction", (text, time.monotonic_ns()))

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        if self._policy is None:
            response.success, response.message = False, "no model loaded (node not configured)"
            return response
        self._queue("reset", None)
        response.success, response.message = True, "recurrent state cleared (before the next step)"
        return response

    def _queue(self, kind: str, payload) -> None:
        self._commands.append((kind, payload))
        self._pairer.wake()

    # ---------------------------------------------------------------- parameters
    def _param(self, name: str):
        return self.get_parameter(name).value

    def _budget_settings(self, params=()) -> dict:
        """The budget parameters now, with `params` (a change being validated) applied."""
        settings = {k: v for k, v in values(self, POLICY_PARAMETERS).items() if k in BUDGET_PARAMETERS}
        settings.update({p.name: _SPECS[p.name].coerce(p.value) for p in params if p.name in BUDGET_PARAMETERS})
        return settings

    def _effective(self, settings: dict, reference) -> dict:
        effective, maximum = effective_budget(settings, reference[0])
        if maximum is not None:
            self.get_logger().info(f"flops_budget {settings['flops_budget']:g} GFLOPs is more than exits "
                                   f"1..{int(settings['max_exit']) or len(reference[0])} can spend "
                                   f"({maximum:.4g}): every allowed exit runs")
        return effective

    def _validate_parameters(self, params) -> SetParametersResult:
        """Refuse a bad change with a reason; no side effects here (rclpy applies nothing on refusal)."""
        reason = check_changes(_SPECS, params)
        budget_names = sorted({p.name for p in params if p.name in BUDGET_PARAMETERS})
        if reason is None and budget_names:
            reference = self._reference
            if reference is None:
                reason = (f"{', '.join(budget_names)} cannot be checked before a model is loaded (node "
                          "unconfigured): configure the node first, or pass the value at start-up (-p)")
            else:
                settings = self._budget_settings(params)
                effective, _ = effective_budget(settings, reference[0])
                # a time budget is checked against the worker's latest cost snapshot (no model lock here); one
                # that the costs no longer meet is refused only when it is the one being set
                reason = refusal(BudgetSettings(), effective, reference[0], reference[1], costs=self._cost_table,
                                 refuse_unmet=bool(set(budget_names) & set(LATENCY_FIELDS)))
                if reason and effective["flops_budget"] != settings["flops_budget"]:
                    reason += f" (flops_budget {settings['flops_budget']:g} runs every allowed exit)"
        return SetParametersResult(successful=reason is None, reason=reason or "")

    def _apply_parameters(self, params) -> None:
        names = {p.name for p in params}
        if "pair_slop_s" in names:
            self._pairer.slop_ns = int(self._param("pair_slop_s") * 1e9)
        if names & {"max_image_pixels", "max_image_aspect"}:
            self._converter.limits = self._image_limits()
        if names & VISION_REUSE_NAMES:
            self._queue("vision_reuse", vision_reuse_settings(values(self, POLICY_PARAMETERS)))
        if names & set(BUDGET_PARAMETERS) and self._reference is not None:
            self._queue("budget", self._effective(self._budget_settings(), self._reference))

    # ---------------------------------------------------------------- worker: the only user of the policy
    def _run_worker(self) -> None:
        while not self._stop.is_set():
            pair = self._pairer.take(timeout=0.1)
            try:
                self._apply_commands()
                if pair is not None and self._active:
                    self._act(pair)
            except Exception as exc:  # noqa: BLE001 - one bad step must not kill the robot's policy
                self._counts["step_errors"] += 1
                self._last_failure_ns = time.monotonic_ns()
                self._last_error = f"inference failed: {type(exc).__name__}: {exc}"
                self.get_logger().error(self._last_error, throttle_duration_sec=2.0)

    def _apply_commands(self) -> None:
        while self._commands:
            kind, payload = self._commands.popleft()
            with self._model_lock:
                if self._policy is None:
                    return
                if kind == "budget":
                    self._budget.apply(payload)
                    self._budget_report = self._budget.report()
                    self.get_logger().info(f"budget changed: {self._budget.describe()}")
                    self._log_latency_note()
                    continue
                if kind == "vision_reuse":
                    self._policy.set_vision_reuse(payload)
                    self.get_logger().info(f"vision reuse: {payload.describe((STATIC, GRIPPER))}")
                    continue
                self._policy.reset()
                self._counts["history_resets"] += 1
                if kind == "instruction":
                    self._instruction, self._instruction_received_ns = payload
                    self._instruction_sequence += 1
                    self._counts["instructions"] += 1
            if kind == "instruction":
                self._publish_instruction_status()
                self.get_logger().info(f"instruction: '{shown(self._instruction)}' (history reset)")

    def _publish_instruction_status(self) -> None:
        msg = InstructionStatus(text=self._instruction, sequence=self._instruction_sequence)
        msg.header.stamp = self.get_clock().now().to_msg()
        self._status_pub.publish(msg)

    def _act(self, pair: Pair) -> None:
        if pair.after_jump:
            with self._model_lock:
                if self._policy is not None:
                    self._policy.reset()
            self._processed.clear()  # a reset simulator sends the same stamps again: new observations
            self._counts["history_resets"] += 1
        if not self._fresh(pair):
            return
        if pair.key in self._processed:
            self._counts["repeated_pairs"] += 1  # a re-send of an observation already acted on
            return
        if not self._instruction:
            self._counts["pairs_without_instruction"] += 1
            self.get_logger().warning("no instruction yet: publish one on 'instruction'",
                                      throttle_duration_sec=5.0)
            return
        if pair.received_ns < self._instruction_received_ns:
            self._counts["pairs_before_instruction"] += 1  # sent for the previous instruction
            return
        self._processed[pair.key] = None
        while len(self._processed) > _PROCESSED_MEMORY:
            self._processed.popitem(last=False)
        with self._model_lock:
            if self._policy is None:
                return
            result = self._policy.step(pair.static, pair.gripper, self._instruction, self._budget.decider)
            self._counts["steps"] += 1
            for camera, reused in zip((STATIC, GRIPPER), result.vision_reused):
                self._counts[f"vision_reused_{camera}"] += int(reused)
            self._stop.wait(self._param("simulated_step_delay_s"))
            if not np.all(np.isfinite(result.action)) or not np.isfinite(result.gflops):
                self._counts["nonfinite_actions"] += 1
                self._last_failure_ns = time.monotonic_ns()
                self._last_error = "the model produced NaN/Inf: action not published"
                self.get_logger().error(self._last_error, throttle_duration_sec=2.0)
                return
            budget = self._budget.flops_budget
        msg = EndEffectorAction()
        msg.header.stamp = Time(nanoseconds=pair.stamp_ns).to_msg()
        msg.header.frame_id = pair.frame_id
        action = np.asarray(result.action, dtype=np.float32)
        msg.translation, msg.rotation, msg.gripper = action[0:3], action[3:6], float(action[6])
        msg.exit_index, msg.layers, msg.gflops = int(result.exit_index), int(result.layers), float(result.gflops)
        msg.flops_budget = float(budget)
        msg.criterion_values = [float(v) for v in result.values]
        latency_ms = (time.monotonic_ns() - pair.received_ns) / 1e6  # arrival -> publish: reported and learned
        msg.latency_ms = float(latency_ms)
        self._action_pub.publish(msg)
        self._counts["actions"] += 1
        self._last_action_ns = time.monotonic_ns()
        self._exit_hist[result.exit_index] += 1
        self._latency_ms.append(latency_ms)
        self._overhead_ms.append(latency_ms - float(result.timings_ms.get("total", 0.0)))
        with self._model_lock:
            if self._budget is not None:  # cleanup may have freed it meanwhile
                self._budget.record(result, latency_ms)  # thresholds for the next step
                self._budget_report = self._budget.report()
                self._cost_table = self._budget.cost_table()
                self._log_latency_note()

    def _log_latency_note(self) -> None:
        """Log when a latency setting stops or starts being met (the costs moved), once per change."""
        note, unmet = self._budget.latency_note, self._budget.latency_unmet
        if note != self._latency_note:
            if unmet:
                self.get_logger().warning(note)
            elif self._latency_unmet:
                self.get_logger().info(f"latency budget met again: {self._budget.describe()}")
            self._latency_note, self._latency_unmet = note, unmet

    def _fresh(self, pair: Pair) -> bool:
        """Whether the pair's stamp fits the node clock; a mismatch is counted and explained (throttled)."""
        now_ns = self.get_clock().now().nanoseconds
        # Under sim time the clock reads 0 until the first /clock: staleness cannot be judged yet.
        age_s = (now_ns - pair.stamp_ns) / 1e9 if now_ns else 0.0
        timeout = self._param("camera_timeout_s")
        if age_s > timeout:
            self._counts["stale_pairs"] += 1
            hint = (" The node uses sim time: is /clock published by the same source as the images?"
                    if self._param("use_sim_time") else
                    " If the images come from a simulator or a bag that publishes /clock, start the node "
                    "with use_sim_time:=true.")
            self._last_error = (f"image pair stamped {age_s:.3g} s before the node clock (camera_timeout_s "
                                f"{timeout:g}): dropped as stale.{hint}")
            self.get_logger().warning(self._last_error, throttle_duration_sec=5.0)
            return False
        if age_s < -max(self._param("pair_slop_s"), 0.5):
            self._counts["pairs_from_the_future"] += 1  # stamped before a clock reset
            self._last_error = (f"image pair stamped {-age_s:.3g} s after the node clock: dropped (clock reset, or "
                                "use_sim_time differs between the camera source and this node)")
            self.get_logger().warning(self._last_error, throttle_duration_sec=5.0)
            return False
        return True

    # ---------------------------------------------------------------- diagnostics
    def _publish_diagnostics(self) -> None:
        self._check_duplicate_name()
        level, message = self._health()
        status = DiagnosticStatus(level=level, name=f"{self.get_name()}: policy", message=message,
                                  hardware_id=str(self._param("device")))
        kv = dict(self._counts)
        kv["pairs"] = self._pairer.stats.pairs
        kv["dropped_pairs"] = self._pairer.stats.dropped
        kv["time_jumps"] = self._pairer.stats.time_jumps
        kv["instruction"] = shown(self._instruction)
        kv["instruction_sequence"] = self._instruction_sequence
        kv["exit_histogram"] = " ".join(f"{k}:{v}" for k, v in sorted(self._exit_hist.items()))
        for name, samples in (("latency_ms", self._latency_ms), ("overhead_ms", self._overhead_ms)):
            if samples:
                kv[f"{name}_p50"] = f"{np.percentile(samples, 50):.2f}"
                kv[f"{name}_p99"] = f"{np.percentile(samples, 99):.2f}"
        if self._budget is not None:
            kv.update(self._budget_report)
            requested = float(self._param("flops_budget"))
            if requested > float(self._budget_report.get("flops_budget", requested)):
                kv["flops_budget_requested"] = f"{requested:g}"
                kv["flops_budget_note"] = "above what the allowed exits can spend: every allowed exit runs"
        if self._policy is not None:
            kv["vision_reuse"] = self._policy.vision_reuse.describe((STATIC, GRIPPER))
        if self._duplicate_name:
            kv["duplicate_node_name"] = "true"
        if self._last_error:
            kv["last_error"] = self._last_error
        if self._latency_unmet:
            status.level = max(status.level, DiagnosticStatus.WARN)
        if self._calibration_warning:  # the calibration belongs to another checkpoint
            kv["calibration_warning"] = self._calibration_warning
            status.level = max(status.level, DiagnosticStatus.WARN)
        status.values = [KeyValue(key=str(k), value=str(v)) for k, v in kv.items()]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(msg)

    def _check_duplicate_name(self) -> None:
        """Two nodes with one name both act and both take parameter changes: say so (rclpy does not)."""
        me = (self.get_name(), self.get_namespace())
        self._duplicate_name = sum(1 for n in self.get_node_names_and_namespaces() if n == me) > 1
        if self._duplicate_name:
            self.get_logger().warning(f"another node is named {self.get_fully_qualified_name()}: both act on the "
                                      "cameras and take parameter changes; rename one (-r __node:=NAME)",
                                      throttle_duration_sec=10.0)

    def _health(self) -> tuple[bytes, str]:
        if self._policy is None:
            return DiagnosticStatus.WARN, f"not configured {self._last_error}".strip()
        if not self._active:
            return DiagnosticStatus.WARN, "inactive"
        if self._last_failure_ns > self._last_action_ns:
            return DiagnosticStatus.ERROR, (f"not publishing: step_errors {self._counts['step_errors']}, "
                                            f"nonfinite_actions {self._counts['nonfinite_actions']}; "
                                            f"{self._last_error}")
        now = self.get_clock().now().nanoseconds
        timeout = self._param("camera_timeout_s")
        silent = []
        for camera, last in self._last_image_ns.items():
            if last is None:
                return DiagnosticStatus.WARN, f"waiting for the {camera} camera"
            age = (now - last) / 1e9
            if age > timeout:
                silent.append(f"{camera} camera silent for {age:.1f} s")
        if silent:
            return DiagnosticStatus.ERROR, "; ".join(silent) + ": no actions"
        if not self._instruction:
            return DiagnosticStatus.WARN, "waiting for an instruction"
        if self._duplicate_name:
            return DiagnosticStatus.WARN, f"acting, but another node is named {self.get_fully_qualified_name()}"
        return DiagnosticStatus.OK, "acting"

    def close(self) -> None:
        self._release()
        self.destroy_node()


def _readable(path: str, what: str) -> str:
    """`path` when it is a non-empty regular file; otherwise ValueError/FileNotFoundError saying which it is."""
    p = Path(path).expanduser()
    if p.is_dir() and what == "checkpoint":
        return str(p)  # a Hugging Face model directory
    if not p.exists():
        raise FileNotFoundError(f"{what} {p} does not exist")
    if not p.is_file():
        raise ValueError(f"{what} {p} is not a regular file")
    if p.stat().st_size == 0:
        raise ValueError(f"{what} {p} is empty (0 bytes)")
    return str(p)


def _run(node: DeerPolicyNode) -> int:
    if not node.start():
        if not node.context.ok():
            return 0  # SIGINT/SIGTERM while the model was loading
        node.get_logger().fatal(f"could not load the model: {node._last_error}")
        return 1
    return spin_guarded(node)


def spin_guarded(node: DeerPolicyNode) -> int:
    """Spin until shutdown. An exception raised inside rclpy's own callbacks (a parameter message with an unknown
    type code, a negative /clock under use_sim_time) is logged and counted instead of ending the process."""
    from rclpy.executors import SingleThreadedExecutor

    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    while node.context.ok():
        try:
            executor.spin()
        except Exception as exc:  # noqa: BLE001 - see above; KeyboardInterrupt and shutdown are not caught
            if not node.context.ok():
                break
            node._counts["callback_errors"] += 1
            node._last_error = f"a callback inside rclpy failed ({type(exc).__name__}: {exc}); request dropped"
            node.get_logger().error(node._last_error, throttle_duration_sec=2.0)
    return 0


def main(args: list[str] | None = None) -> int:
    return run_node(NODE_NAME, DeerPolicyNode, _run, args, parameters=POLICY_PARAMETERS)


if __name__ == "__main__":
    raise SystemExit(main())
