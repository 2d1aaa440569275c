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
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np

from deer_ros.bench.timing import BenchFrame, summarize
from deer_ros.stamps import stamp_ns
from deer_ros.ros.launcher import NodeProcess, caller_domain, executable, ros_args, ros_env

if TYPE_CHECKING:
    from deer_ros.ros.client import Heard, PolicyClient


def first_heard(heard: Heard) -> dict[int, tuple[float, object]]:
    """Stamp (ns) -> (arrival time, message) of the first message heard with that stamp."""
    first: dict[int, tuple[float, object]] = {}
    for t, msg in zip(heard.times, heard):
        first.setdefault(stamp_ns(msg.header.stamp), (t, msg))
    return first


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
def ros_session(log_dir: Path, threads: int = 0) -> Iterator[tuple[PolicyClient, Nodes]]:
    """A ROS domain with a client here and a place to start nodes; everything is stopped afterwards. The domain
    is the caller's ROS_DOMAIN_ID when set (it keeps the run off other domains), else a random one of its own."""
    from deer_ros.ros.client import PolicyClient

    domain = caller_domain()
    if domain is None:
        domain = random.SystemRandom().randint(101, 232)
    log_dir.mkdir(parents=True, exist_ok=True)
    client, nodes = PolicyClient(domain, "deer_ros_bench", sim_time=False), Nodes(domain, log_dir, threads)
    try:
        yield client, nodes
    finally:
        nodes.stop_all()
        client.close()


def _tail(proc: NodeProcess) -> str:
    return proc.output()[-2000:]


def node_overhead(checkpoint: Path, frames: Sequence[BenchFrame], pairs: int, rate_hz: float,
                  log_dir: Path, threads: int = 0) -> dict:
    """Feed `pairs` image pairs at `rate_hz` to deer_policy_node; latency and overhead of the answers."""
    from deer_ros.ros.image import rgb_to_image

    with ros_session(log_dir, threads) as (client, nodes):
        sent: dict[int, float] = {}  # stamp -> monotonic time the pair was complete here
        policy = nodes.start("deer_policy_node", {"checkpoint": str(checkpoint), "model": "tiny",
                                                  "diagnostics_period_s": 0.5})
        client.spin_until(lambda: client.policy_ready() or not policy.running, 120, "deer_policy_node to start")
        if not policy.running:
            raise RuntimeError(f"deer_policy_node exited at start:\n{_tail(policy)}")
        client.instruct(frames[0].instruction)  # applied before the first pair
        period = 1.0 / rate_hz
        next_t = time.monotonic()
        for i in range(pairs):
            f = frames[i % len(frames)]
            client.spin_for(next_t - time.monotonic())
            stamp = client.node.get_clock().now().to_msg()
            static = rgb_to_image(f.static, stamp, "calvin_static_camera")
            gripper = rgb_to_image(f.gripper, stamp, "calvin_gripper_camera")
            sent[stamp_ns(stamp)] = time.monotonic()  # the pair goes out now, converted beforehand
            client.send_observation(stamp, static=static, gripper=gripper)
            next_t += period
        try:
            client.spin_until(lambda: len(first_heard(client.actions).keys() & sent.keys()) >= pairs, 30,
                              "the last actions")
        except TimeoutError:
            pass  # pairs the node dropped (newest-only policy) are reported below, not an error
        client.spin_for(1.2)  # one more diagnostics message with every action counted
        if not policy.running:
            raise RuntimeError(f"deer_policy_node died during the benchmark:\n{_tail(policy)}")
        diagnostics = client.counts("policy")
        # stamp -> (e2e ms, latency_ms, layers)
        got = {k: ((t - sent[k]) * 1e3, float(a.latency_ms), int(a.layers))
               for k, (t, a) in first_heard(client.actions).items() if k in sent}
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
    from sensor_msgs.msg import Image

    from deer_ros.msg import EndEffectorAction
    from deer_ros.ros.client import STREAM

    report = log_dir / "bridge_free_running.json"
    with ros_session(log_dir) as (client, nodes):
        seen: dict[int, set] = defaultdict(set)
        complete: list[float] = []

        def on_image(camera: str) -> Callable:
            def callback(msg: Image) -> None:
                key = stamp_ns(msg.header.stamp)
                seen[key].add(camera)
                if len(seen[key]) == 2:
                    complete.append(time.monotonic())
            return callback

        # Only the stamps are kept (client.collect would hold every image of the run in memory).
        client.node.create_subscription(Image, "camera/static/image_raw", on_image("static"), STREAM)
        client.node.create_subscription(Image, "camera/gripper/image_raw", on_image("gripper"), STREAM)
        # The bridge starts once a policy is there (an `action` publisher); this one stands in for it, silent.
        client.publisher(EndEffectorAction, "action")
        bridge = nodes.start("calvin_bridge_node", {"lockstep": False, "rate_hz": rate_hz, "loop": True,
                                                    "max_frames": frames, "report_path": str(report),
                                                    "exit_when_done": True, "instruction_settle_s": 0.0})
        client.spin_until(lambda: not bridge.running, 300, "calvin_bridge_node to play its frames")
        client.spin_for(0.5)
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
    report = log_dir / "bridge_lockstep.json"
    with ros_session(log_dir, threads) as (client, nodes):
        policy = nodes.start("deer_policy_node", {"checkpoint": str(checkpoint), "model": "tiny",
                                                  "use_sim_time": True})
        bridge = nodes.start("calvin_bridge_node", {"lockstep": True, "loop": True, "max_frames": frames,
                                                    "report_path": str(report), "exit_when_done": True})
        client.spin_until(lambda: not bridge.running or not policy.running, 600,
                          "calvin_bridge_node to finish in lockstep")
        client.spin_for(0.5)
        code = bridge.proc.returncode
        actions = {k: t for k, (t, _) in first_heard(client.actions).items()}
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
