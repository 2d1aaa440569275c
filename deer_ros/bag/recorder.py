"""bag_recorder: an rclpy node that records deer_ros topics into a rosbag2 bag, as `ros2 bag record` would.

Messages are taken as serialized CDR (raw subscriptions: no decode/encode), logged at their receive time on the
node clock (sim time under use_sim_time, as ros2 bag record does), with each topic's type, message definition and
the QoS deer_ros publishes it with. Latched topics are subscribed transient-local so the instruction that was
published before the recorder started is recorded too. The bag is flushed every `flush_s` seconds
(deer_ros.bag.writer); a SIGINT/SIGTERM closes it, a SIGKILL leaves it for `deer-ros bag repair`.
"""
from __future__ import annotations

import os
import signal
from pathlib import Path

from deer_ros.bag import types as T
from deer_ros.bag.writer import BagWriter


def _message_class(msgtype: str):
    import importlib

    package, _, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


class BagRecorder:
    """Subscribes `node` to `topics` and writes what arrives to a new bag at `path`."""

    def __init__(self, node, path: str | os.PathLike, topics=T.DEFAULT_TOPICS, storage: str = "mcap",
                 flush_s: float = 1.0) -> None:
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

        self.node = node
        self.writer = BagWriter(path, storage)
        self.counts: dict[str, int] = {}
        for spec in topics:
            self.writer.add_topic(spec)
            self.counts[spec.name] = 0
            qos = QoSProfile(depth=1 if spec.latched else 100, reliability=ReliabilityPolicy.RELIABLE,
                             durability=(DurabilityPolicy.TRANSIENT_LOCAL if spec.latched
                                         else DurabilityPolicy.VOLATILE))
            node.create_subscription(_message_class(spec.msgtype), spec.name,
                                     lambda data, name=spec.name: self._on_message(name, data), qos, raw=True)
        self._timer = node.create_timer(flush_s, self.writer.flush)

    def _on_message(self, topic: str, data: bytes) -> None:
        self.writer.write_raw(topic, self.node.get_clock().now().nanoseconds, data)
        self.counts[topic] += 1

    def close(self) -> Path:
        self.node.destroy_timer(self._timer)
        return self.writer.close()


def record(path: str | os.PathLike, topics=T.DEFAULT_TOPICS, storage: str = "mcap",
           duration_s: float | None = None, node_name: str = "bag_recorder") -> dict[str, int]:
    """Record until SIGINT/SIGTERM (or `duration_s`); returns the message count per topic."""
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    # Our own handlers: a stop must close the bag, not shut the context down under the spinning loop.
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node(node_name)
    recorder = BagRecorder(node, path, topics, storage)
    stop = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.append(True))
    end = None if duration_s is None else node.get_clock().now().nanoseconds + int(duration_s * 1e9)
    node.get_logger().info(f"recording {len(recorder.counts)} topics to {path}")
    try:
        while not stop and (end is None or node.get_clock().now().nanoseconds < end):
            rclpy.spin_once(node, timeout_sec=0.1)
    finally:
        recorder.close()
        node.destroy_node()
        rclpy.try_shutdown()
    return recorder.counts
