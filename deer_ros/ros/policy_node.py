"""deer_policy: cameras and instruction in, end-effector actions out, under a compute budget set at run time.

A managed (lifecycle) node: configure loads the model and the calibration, activate starts acting, deactivate
stops publishing, cleanup frees the model. With `autostart` (default) it configures and activates itself.

Threads: subscriptions and parameter services run on the executor and only store data; one worker thread runs
the model on the newest image pair, so inference never blocks the subscriptions.
"""
from __future__ import annotations

import threading
import time
import traceback
from collections import Counter, deque

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.clock import Clock, ClockType
from rclpy.time import Time
from sensor_msgs.msg import Image
from std_msgs.msg import String
from std_srvs.srv import Trigger

from deer_ros.exits.calibration import Calibration, CalibrationError, calibration_for
from deer_ros.exits.controller import BudgetError, ExitBudget
from deer_ros.msg import EndEffectorAction
from deer_ros.ros.image import ImageConverter, ImageError
from deer_ros.ros.pairing import GRIPPER, STATIC, Pair, StampPairer
from deer_ros.ros.node_main import run_node
from deer_ros.ros.params import ParamSpec, check_changes, declare, values

NODE_NAME = "deer_policy"
BUDGET_PARAMETERS = ("flops_budget", "max_exit", "exit_ratio", "thresholds", "criterion", "budget_tracking")

POLICY_PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec("flops_budget", float, 0.0, "Target average LLM GFLOPs per action; 0 = no average budget "
              "(exit_ratio decides).", 0.0, 10000.0),
    ParamSpec("max_exit", int, 0, "Highest exit that may run (peak compute cap); 0 = all built exits.", 0, 64),
    ParamSpec("exit_ratio", float, 1.0, "DeeR geometric exit-rate parameter (<1 favours early exits), used when "
              "flops_budget is 0.", 0.05, 20.0),
    ParamSpec("thresholds", list, [], "Explicit per-exit thresholds; non-empty overrides flops_budget and "
              "exit_ratio. One value per allowed exit (the last is ignored: the last exit always stops)."),
    ParamSpec("criterion", str, "action_consistency", "Exit criterion."),
    ParamSpec("budget_tracking", bool, True, "Correct thresholds online so the realised average GFLOPs "
              "follows flops_budget."),
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
    ParamSpec("diagnostics_period_s", float, 1.0, "Period of /diagnostics messages.", 0.1, 60.0, read_only=True),
)
_SPECS = {spec.name: spec for spec in POLICY_PARAMETERS}

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def _budget_changes(params) -> dict:
    """The budget parameters among `params`, as plain values for ExitBudget.check/apply."""
    return {p.name: (list(p.value) if _SPECS[p.name].kind is list else p.value)
            for p in params if p.name in BUDGET_PARAMETERS}


class DeerPolicyNode(LifecycleNode):
    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        declare(self, POLICY_PARAMETERS)
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self._converter = ImageConverter()
        self._pairer = StampPairer(slop_ns=int(self._param("pair_slop_s") * 1e9))
        self._policy = None
        self._budget: ExitBudget | None = None
        self._model_lock = threading.Lock()  # policy state: steps, resets and threshold changes
        self._instruction = ""
        self._active = False
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self._last_image_ns = {STATIC: None, GRIPPER: None}  # node clock
        self._counts: Counter = Counter()
        self._exit_hist: Counter = Counter()
        self._latency_ms: deque = deque(maxlen=500)
        self._overhead_ms: deque = deque(maxlen=500)
        self._io: list = []
        self._action_pub = None
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # Diagnostics on the steady clock: they must keep coming when sim time stops (a paused simulator).
        self._diag_timer = self.create_timer(self._param("diagnostics_period_s"), self._publish_diagnostics,
                                             clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._last_error = ""
        self._calibration_warning = ""

    # ---------------------------------------------------------------- lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        from deer_ros.model.checkpoint import load_policy  # torch is imported only when a model is loaded

        p = values(self, POLICY_PARAMETERS)
        if p["cpu_threads"]:
            import torch

            torch.set_num_threads(p["cpu_threads"])
        try:
            # max_exit is a run-time cap (it can be raised again), so every exit that fits memory_budget_mb is
            # built; only memory_budget_mb leaves layers out.
            policy = load_policy(checkpoint=p["checkpoint"] or None, preset=p["model"], device=p["device"],
                                 dtype=p["dtype"], memory_budget_mb=p["memory_budget_mb"] or None)
            budget = ExitBudget.create(policy.exits, self._load_calibration(p),
                                       {k: p[k] for k in BUDGET_PARAMETERS})
        except Exception as exc:  # noqa: BLE001 - any failure must reach the log, not vanish in the lifecycle
            self._last_error = f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, (OSError, ValueError, RuntimeError, BudgetError, CalibrationError)):
                self.get_logger().error(traceback.format_exc())
            self.get_logger().error(f"configure failed: {self._last_error}")
            return TransitionCallbackReturn.FAILURE
        with self._model_lock:
            self._policy, self._budget = policy, budget
        self._action_pub = self.create_lifecycle_publisher(EndEffectorAction, "action", 10)
        self._io = [
            self.create_subscription(Image, "camera/static/image_raw", lambda m: self._on_image(STATIC, m),
                                     qos_profile_sensor_data),
            self.create_subscription(Image, "camera/gripper/image_raw", lambda m: self._on_image(GRIPPER, m),
                                     qos_profile_sensor_data),
            self.create_subscription(String, "instruction", self._on_instruction, LATCHED),
            self.create_service(Trigger, "~/reset", self._on_reset),
        ]
        self._stop.clear()
        self._worker = threading.Thread(target=self._run_worker, name="deer_policy_worker", daemon=True)
        self._worker.start()
        exits = ", ".join(f"{e.index}:{e.layers}L/{e.gflops:.3g}G" for e in policy.exits)
        self.get_logger().info(f"loaded {p['model']} on {p['device']} ({p['dtype']}); exits {exits}; "
                               f"{budget.describe()}")
        return TransitionCallbackReturn.SUCCESS

    def _load_calibration(self, p: dict) -> Calibration | None:
        """The calibration file given, or the one inside the model folder (the bundled demo model's by default)."""
        calibration, self._calibration_warning = calibration_for(p["checkpoint"], p["calibration"])
        if calibration is None:
            self.get_logger().warning("no calibration file: flops_budget and exit_ratio cannot be solved; "
                                      "explicit thresholds and max_exit still work")
        if self._calibration_warning:
            self.get_logger().warning(self._calibration_warning)
        return calibration

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
            if hasattr(entity, "srv_name"):
                self.destroy_service(entity)
            else:
                self.destroy_subscription(entity)
        self._io = []
        if self._action_pub is not None:
            self.destroy_lifecycle_publisher(self._action_pub)
            self._action_pub = None
        with self._model_lock:
            device = getattr(self._policy, "device", None)
            self._policy = None
            self._budget = None
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

    # ---------------------------------------------------------------- inputs
    def _on_image(self, camera: str, msg: Image) -> None:
        try:
            rgb = self._converter.to_rgb(msg)
        except ImageError as exc:
            self._counts[f"bad_{camera}_images"] += 1
            self._last_error = f"{camera} image refused: {exc}"
            self.get_logger().warning(self._last_error, throttle_duration_sec=2.0)
            return
        now = self.get_clock().now().nanoseconds
        self._last_image_ns[camera] = now
        self._counts[f"{camera}_images"] += 1
        stamp = Time.from_msg(msg.header.stamp).nanoseconds
        if self._pairer.add(camera, stamp, rgb, time.monotonic_ns(), msg.header.frame_id):
            self.get_logger().warning("image stamps went back in time (simulator reset?): history cleared")
            self._reset_history()

    def _on_instruction(self, msg: String) -> None:
        text = msg.data.strip()
        if not text:
            self._counts["empty_instructions"] += 1
            self._last_error = "empty instruction refused; the previous instruction stays in force"
            self.get_logger().warning(self._last_error)
            return
        self._instruction = text
        self._reset_history()
        self._counts["instructions"] += 1
        self.get_logger().info(f"instruction: '{text}' (history reset)")

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        if self._policy is None:
            response.success, response.message = False, "no model loaded (node not configured)"
            return response
        self._reset_history()
        response.success, response.message = True, "recurrent state cleared"
        return response

    def _reset_history(self) -> None:
        with self._model_lock:
            if self._policy is not None:
                self._policy.reset()

    # ---------------------------------------------------------------- parameters
    def _param(self, name: str):
        return self.get_parameter(name).value

    def _validate_parameters(self, params) -> SetParametersResult:
        """Refuse a bad change with a reason; no side effects here (rclpy applies nothing on refusal)."""
        reason = check_changes(_SPECS, params)
        changes = _budget_changes(params)
        if reason is None and changes and self._budget is not None:
            reason = self._budget.check(changes)
        return SetParametersResult(successful=reason is None, reason=reason or "")

    def _apply_parameters(self, params) -> None:
        names = {p.name for p in params}
        if "pair_slop_s" in names:
            self._pairer.slop_ns = int(self._param("pair_slop_s") * 1e9)
        changes = _budget_changes(params)
        if changes and self._budget is not None:
            with self._model_lock:
                self._budget.apply(changes)
            self.get_logger().info(f"budget changed: {self._budget.describe()}")

    # ---------------------------------------------------------------- inference
    def _run_worker(self) -> None:
        while not self._stop.is_set():
            pair = self._pairer.take(timeout=0.1)
            if pair is not None and self._active:
                try:
                    self._act(pair)
                except Exception as exc:  # noqa: BLE001 - one bad step must not kill the robot's policy
                    self._counts["step_errors"] += 1
                    self._last_error = f"inference failed: {exc}"
                    self.get_logger().error(self._last_error, throttle_duration_sec=2.0)

    def _act(self, pair: Pair) -> None:
        now_ns = self.get_clock().now().nanoseconds
        # Under sim time the clock reads 0 until the first /clock: staleness cannot be judged yet.
        age_s = (now_ns - pair.stamp_ns) / 1e9 if now_ns else 0.0
        if age_s > self._param("camera_timeout_s"):
            self._counts["stale_pairs"] += 1
            return
        if age_s < -max(self._param("pair_slop_s"), 0.5):
            self._counts["pairs_from_the_future"] += 1  # stamped before a clock reset
            return
        if not self._instruction:
            self._counts["pairs_without_instruction"] += 1
            self.get_logger().warning("no instruction yet: publish one on 'instruction'",
                                      throttle_duration_sec=5.0)
            return
        with self._model_lock:
            if self._policy is None:
                return
            result = self._policy.step(pair.static, pair.gripper, self._instruction, self._budget.decider)
            if not np.all(np.isfinite(result.action)):
                self._counts["nonfinite_actions"] += 1
                self._last_error = "the model produced NaN/Inf: action not published"
                self.get_logger().error(self._last_error, throttle_duration_sec=2.0)
                return
            self._budget.record(result.gflops)
            budget = self._budget.flops_budget
        msg = EndEffectorAction()
        msg.header.stamp = Time(nanoseconds=pair.stamp_ns).to_msg()
        msg.header.frame_id = pair.frame_id
        action = np.asarray(result.action, dtype=np.float32)
        msg.translation, msg.rotation, msg.gripper = action[0:3], action[3:6], float(action[6])
        msg.exit_index, msg.layers, msg.gflops = int(result.exit_index), int(result.layers), float(result.gflops)
        msg.flops_budget = float(budget)
        latency_ms = (time.monotonic_ns() - pair.received_ns) / 1e6
        msg.latency_ms = float(latency_ms)
        self._action_pub.publish(msg)
        self._counts["actions"] += 1
        self._exit_hist[result.exit_index] += 1
        self._latency_ms.append(latency_ms)
        self._overhead_ms.append(latency_ms - float(result.timings_ms.get("total", 0.0)))

    # ---------------------------------------------------------------- diagnostics
    def _publish_diagnostics(self) -> None:
        level, message = self._health()
        status = DiagnosticStatus(level=level, name=f"{self.get_name()}: policy", message=message,
                                  hardware_id=str(self._param("device")))
        kv = dict(self._counts)
        kv["dropped_pairs"] = self._pairer.stats.dropped
        kv["time_jumps"] = self._pairer.stats.time_jumps
        kv["instruction"] = self._instruction
        kv["exit_histogram"] = " ".join(f"{k}:{v}" for k, v in sorted(self._exit_hist.items()))
        for name, samples in (("latency_ms", self._latency_ms), ("overhead_ms", self._overhead_ms)):
            if samples:
                kv[f"{name}_p50"] = f"{np.percentile(samples, 50):.2f}"
                kv[f"{name}_p99"] = f"{np.percentile(samples, 99):.2f}"
        if self._budget is not None:
            kv.update(self._budget.report())
        if self._last_error:
            kv["last_error"] = self._last_error
        if self._calibration_warning:  # the calibration belongs to another checkpoint
            kv["calibration_warning"] = self._calibration_warning
            status.level = max(status.level, DiagnosticStatus.WARN)
        status.values = [KeyValue(key=str(k), value=str(v)) for k, v in kv.items()]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(msg)

    def _health(self) -> tuple[bytes, str]:
        if self._policy is None:
            return DiagnosticStatus.WARN, f"not configured {self._last_error}".strip()
        if not self._active:
            return DiagnosticStatus.WARN, "inactive"
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
        return DiagnosticStatus.OK, "acting"

    def close(self) -> None:
        self._release()
        self.destroy_node()


def _run(node: DeerPolicyNode) -> int:
    if not node.start():
        node.get_logger().fatal("could not load the model; see the error above")
        return 1
    rclpy.spin(node)
    return 0


def main(args: list[str] | None = None) -> int:
    return run_node(NODE_NAME, DeerPolicyNode, _run, args, parameters=POLICY_PARAMETERS)


if __name__ == "__main__":
    raise SystemExit(main())
