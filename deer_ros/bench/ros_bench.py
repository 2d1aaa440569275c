"""ROS benchmarks over real DDS on loopback: policy node overhead, bridge replay throughput, bridge<->policy lockstep.

The node executables are started as processes (deer_ros.ros.launcher, as `deer-ros demo` does) in a ROS
domain of their own; the measuring side is an rclpy node inside this process.

node overhead   `deer_policy_node` is fed image pairs from the CALVIN sample at a steady rate. For each action:
                e2e = (action received here) - (second image of its pair published here), and the action's
                own latency_ms (pair complete in the node -> action published). The node's /diagnostics give
                overhead_ms p50/p99 = latency_ms minus the model's step time. The overhead of the whole path
                (observation in -> action out, minus model time) is the in-node overhead plus the part outside
                the node's window (e2e - latency_ms: DDS both ways, image conversion, callback dispatch); its
                p50/p99 are given as the sum of the parts' percentiles.
bridge replay   `calvin_bridge_node` free-running (lockstep false, a high rate_hz, looping) into a subscriber
                here; pairs/s = complete (static + gripper) pairs received per second.
lockstep        `calvin_bridge_node` in lockstep with `deer_policy_node`: every frame must get its action (no frame
                lost, none re-sent); the achieved rate is compared with CALVIN's 30 Hz.
"""
from __future__ import annotations

import json
import random
import signal
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from deer_ros.bench.timing import BenchFrame, summarize
from deer_ros.ros.launcher import NodeProcess, executable, ros_args, ros_env
from deer_ros.ros.probe import Probe as Listener


def stamp_ns(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


class Nodes:
    """Node processes started for one benchmark; all stopped with SIGINT at the end, their logs kept.

    `threads` > 0 sets OMP_NUM_THREADS for them (torch's intra-op threads), like the bench's own --cpu-threads.
    """

    def __init__(self, domain_id: int, log_dir: Path, threads: int = 0) -> None:
        self.env = ros_env(domain_id)
        if threads:
            self.env["OMP_NUM_THREADS"] = str(threads)
        self.log_dir = log_dir
        self.started: list[NodeProcess] = []

    def start(self, exe: str, params: dict) -> NodeProcess:
        argv = [executable(exe), *ros_args(params=params)]
        proc = NodeProcess(exe, argv, self.env, self.log_dir / f"{exe}-{len(self.started)}.log")
        self.started.append(proc)
        return proc

    def stop_all(self) -> dict[str, int]:
        return {f"{p.name}-{i}": p.stop(signal.SIGINT) for i, p in enumerate(self.started)}


@contextmanager
def ros_session(log_dir: Path, threads: int = 0) -> Iterator[tuple[Listener, Nodes]]:
    """A fresh ROS domain with a listener here and a place to start nodes; everything is stopped afterwards."""
    domain = random.SystemRandom().randint(101, 232)
    log_dir.mkdir(parents=True, exist_ok=True)
    listener, nodes = Listener(domain), Nodes(domain, log_dir, threads)
    try:
        yield listener, nodes
    finally:
        nodes.stop_all()
        listener.close()


def _tail(proc: NodeProcess) -> str:
    return proc.output()[-2000:]


def node_overhead(checkpoint: Path, frames: Sequence[BenchFrame], pairs: int, rate_hz: float,
                  log_dir: Path, threads: int = 0) -> dict:
    """Feed `pairs` image pairs at `rate_hz` to deer_policy_node; latency and overhead of the answers."""
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from deer_ros.msg import EndEffectorAction
    from deer_ros.ros.image import rgb_to_image

    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    with ros_session(log_dir, threads) as (listener, nodes):
        node = listener.node
        sent: dict[int, float] = {}  # stamp -> monotonic time the pair was complete here
        got: dict[int, tuple[float, float, int]] = {}  # stamp -> (e2e ms, latency_ms, layers)
        diagnostics: dict[str, str] = {}

        def on_action(msg: EndEffectorAction) -> None:
            now = time.monotonic()
            key = stamp_ns(msg.header.stamp)
            if key in sent and key not in got:
                got[key] = ((now - sent[key]) * 1e3, float(msg.latency_ms), int(msg.layers))

        def on_diagnostics(msg: DiagnosticArray) -> None:
            for status in msg.status:
                if "policy" in status.name:
                    diagnostics.clear()
                    diagnostics.update({kv.key: kv.value for kv in status.values})

        node.create_subscription(EndEffectorAction, "action", on_action, 10)
        node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
        pub_static = node.create_publisher(Image, "camera/static/image_raw", qos_profile_sensor_data)
        pub_gripper = node.create_publisher(Image, "camera/gripper/image_raw", qos_profile_sensor_data)
        pub_instruction = node.create_publisher(String, "instruction", latched)
        policy = nodes.start("deer_policy_node", {"checkpoint": str(checkpoint), "model": "tiny",
                                                  "diagnostics_period_s": 0.5})
        pub_instruction.publish(String(data=frames[0].instruction))
        listener.spin_until(lambda: pub_gripper.get_subscription_count() > 0 and node.count_publishers("action") > 0
                            or not policy.running, 120, "deer_policy_node to start")
        if not policy.running:
            raise RuntimeError(f"deer_policy_node exited at start:\n{_tail(policy)}")
        listener.spin_for(1.0)  # let the latched instruction arrive before the first pair
        period = 1.0 / rate_hz
        next_t = time.monotonic()
        for i in range(pairs):
            f = frames[i % len(frames)]
            while time.monotonic() < next_t:
                listener.executor.spin_once(timeout_sec=max(0.0, min(0.002, next_t - time.monotonic())))
            stamp = node.get_clock().now()
            msg_s = rgb_to_image(f.static, stamp.to_msg(), "calvin_static_camera")
            msg_g = rgb_to_image(f.gripper, stamp.to_msg(), "calvin_gripper_camera")
            pub_static.publish(msg_s)
            sent[stamp.nanoseconds] = time.monotonic()  # the pair is complete once the second image goes out
            pub_gripper.publish(msg_g)
            next_t += period
        try:
            listener.spin_until(lambda: len(got) >= pairs, 30, "the last actions")
        except TimeoutError:
            pass  # pairs the node dropped (newest-only policy) are reported below, not an error
        listener.spin_for(1.2)  # one more diagnostics message with every action counted
        if not policy.running:
            raise RuntimeError(f"deer_policy_node died during the benchmark:\n{_tail(policy)}")
    if not got:
        raise RuntimeError(f"deer_policy_node answered none of {pairs} pairs; log in {log_dir}")
    e2e = np.array([v[0] for v in got.values()])
    latency = np.array([v[1] for v in got.values()])
    outside = e2e - latency
    result = {"pairs_sent": pairs, "actions": len(got), "rate_hz": rate_hz,
              "e2e_ms": summarize(e2e), "latency_ms": summarize(latency), "outside_node_ms": summarize(outside),
              "outside_node_ms_p99": float(np.percentile(outside, 99)), "e2e_ms_p99": float(np.percentile(e2e, 99)),
              "diagnostics": {k: v for k, v in diagnostics.items() if k.startswith(("overhead", "latency", "dropped",
                                                                                    "actions", "stale"))}}
    inside_p50 = float(diagnostics.get("overhead_ms_p50", "nan"))
    inside_p99 = float(diagnostics.get("overhead_ms_p99", "nan"))
    result["in_node_overhead_ms_p50"], result["in_node_overhead_ms_p99"] = inside_p50, inside_p99
    result["overhead_ms_p50"] = inside_p50 + result["outside_node_ms"]["p50"]
    result["overhead_ms_p99"] = inside_p99 + result["outside_node_ms_p99"]
    return result


def bridge_throughput(frames: int, log_dir: Path, rate_hz: float = 10000.0) -> dict:
    """calvin_bridge_node free-running into a subscriber here: complete image pairs received per second."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from deer_ros.msg import EndEffectorAction

    stream = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)  # the bridge's own QoS
    report = log_dir / "bridge_free_running.json"
    with ros_session(log_dir) as (listener, nodes):
        seen: dict[int, set] = defaultdict(set)
        complete: list[float] = []

        def on_image(camera: str) -> Callable:
            def callback(msg: Image) -> None:
                key = stamp_ns(msg.header.stamp)
                seen[key].add(camera)
                if len(seen[key]) == 2:
                    complete.append(time.monotonic())
            return callback

        listener.node.create_subscription(Image, "camera/static/image_raw", on_image("static"), stream)
        listener.node.create_subscription(Image, "camera/gripper/image_raw", on_image("gripper"), stream)
        # The bridge starts once a policy is there (an `action` publisher); this one stands in for it, silent.
        listener.node.create_publisher(EndEffectorAction, "action", stream)
        bridge = nodes.start("calvin_bridge_node", {"lockstep": False, "rate_hz": rate_hz, "loop": True,
                                                    "max_frames": frames, "report_path": str(report),
                                                    "exit_when_done": True, "instruction_settle_s": 0.0})
        listener.spin_until(lambda: not bridge.running, 300, "calvin_bridge_node to play its frames")
        listener.spin_for(0.5)
        code = bridge.proc.returncode
    if code != 0 or not report.exists():
        raise RuntimeError(f"calvin_bridge_node exited with {code}:\n{_tail(bridge)}")
    summary = json.loads(report.read_text())["bridge"]
    if len(complete) < 2:
        raise RuntimeError(f"received {len(complete)} image pairs from calvin_bridge_node; log in {log_dir}")
    seconds = complete[-1] - complete[0]
    return {"frames_sent": summary["frames_sent"], "pairs_received": len(complete),
            "pairs_lost": summary["frames_sent"] - len(complete), "seconds": seconds,
            "pairs_per_s": (len(complete) - 1) / seconds, "rate_hz_requested": rate_hz}


def lockstep(checkpoint: Path, frames: int, log_dir: Path, threads: int = 0) -> dict:
    """calvin_bridge_node in lockstep with deer_policy_node: frames sent, actions, losses, achieved rate."""
    from deer_ros.msg import EndEffectorAction

    report = log_dir / "bridge_lockstep.json"
    with ros_session(log_dir, threads) as (listener, nodes):
        actions: dict[int, float] = {}

        def on_action(msg: EndEffectorAction) -> None:
            actions.setdefault(stamp_ns(msg.header.stamp), time.monotonic())

        listener.node.create_subscription(EndEffectorAction, "action", on_action, 10)
        policy = nodes.start("deer_policy_node", {"checkpoint": str(checkpoint), "model": "tiny",
                                                  "use_sim_time": True})
        bridge = nodes.start("calvin_bridge_node", {"lockstep": True, "loop": True, "max_frames": frames,
                                                    "report_path": str(report), "exit_when_done": True})
        listener.spin_until(lambda: not bridge.running or not policy.running, 600,
                            "calvin_bridge_node to finish in lockstep")
        listener.spin_for(0.5)
        code = bridge.proc.returncode
    if code != 0 or not report.exists():
        raise RuntimeError(f"calvin_bridge_node exited with {code}:\n{_tail(bridge)}\n{_tail(policy)}")
    summary = json.loads(report.read_text())
    times = sorted(actions.values())
    seconds = times[-1] - times[0] if len(times) > 1 else float("nan")
    b = summary["bridge"]
    return {"frames_sent": b["frames_sent"], "actions_scored": summary["overall"].get("actions", 0),
            "actions_heard": len(actions), "unanswered": b["unanswered"], "resends": b["resends"],
            "frames_lost": b["frames_sent"] - summary["overall"].get("actions", 0),
            "seconds": seconds, "rate_hz": (len(times) - 1) / seconds if len(times) > 1 else float("nan")}
