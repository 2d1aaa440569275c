"""CALVIN split <-> rosbag2 bag.

split -> bag: each segment becomes its instruction (logged at the first frame's time) followed by its frames as
the bridge publishes them: /clock, both cameras and the recorded action on `expert_action`, all stamped with the
bridge's sim time of the frame index (30 Hz) and logged at that time. The instruction -> task ids go into the
bag's custom_data, so tasks survive the round trip.
bag -> split: `BagSplit` pairs the messages into frames (see deer_ros.bag.reader); `CalvinRecorder` writes them.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from deer_ros.bag import types as T
from deer_ros.bag.reader import TASKS_KEY, BagSplit
from deer_ros.bag.writer import BagWriter
from deer_ros.calvin.dataset import CalvinSplit, Frame
from deer_ros.calvin.recorder import CalvinRecorder

CALVIN_HZ = 30
STATIC_FRAME_ID = "calvin_static_camera"
GRIPPER_FRAME_ID = "calvin_gripper_camera"
SPLIT_TOPICS = tuple(t for t in T.DEFAULT_TOPICS if t.name in
                     (T.STATIC_TOPIC, T.GRIPPER_TOPIC, T.INSTRUCTION_TOPIC, T.EXPERT_TOPIC, "/clock"))


def frame_ns(index: int) -> int:
    """The bridge's sim time of frame `index` (deer_ros.ros.bridge_node.sim_stamp)."""
    return int(round(index * 1e9 / CALVIN_HZ))


def frame_messages(store, frame: Frame, ns: int) -> dict[str, object]:
    """The messages the bridge publishes for `frame`, stamped `ns`, as rosbags objects by topic."""
    m = store.types
    stamp = m["builtin_interfaces/msg/Time"](sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)

    def image(rgb, frame_id):
        header = m["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)
        return m[T.IMAGE](header=header, height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8", is_bigendian=0,
                          step=rgb.shape[1] * 3, data=rgb.reshape(-1).copy())

    rel = frame.rel_actions.astype(np.float32)
    action = m[T.ACTION](header=m["std_msgs/msg/Header"](stamp=stamp, frame_id=STATIC_FRAME_ID),
                         translation=rel[:3].copy(), rotation=rel[3:6].copy(), gripper=float(rel[6]), exit_index=0,
                         layers=0, gflops=0.0, latency_ms=0.0, flops_budget=0.0,
                         criterion_values=np.zeros(0, dtype=np.float32))
    return {"/clock": m[T.CLOCK](clock=stamp), T.STATIC_TOPIC: image(frame.rgb_static, STATIC_FRAME_ID),
            T.GRIPPER_TOPIC: image(frame.rgb_gripper, GRIPPER_FRAME_ID), T.EXPERT_TOPIC: action}


def split_to_bag(split_dir: str | os.PathLike, bag: str | os.PathLike, select: str | None = None,
                 storage: str = "mcap") -> Path:
    """Write the segments of a CALVIN split (all, or `select` as in CalvinSplit.segments) as a bag."""
    split = CalvinSplit(split_dir)
    segments = split.segments(select)
    with BagWriter(bag, storage) as writer:
        for spec in SPLIT_TOPICS:
            writer.add_topic(spec)
        store = writer.store
        for segment in segments:
            first = frame_ns(segment.start)
            writer.write(T.INSTRUCTION_TOPIC, first, store.types[T.STRING](data=segment.instruction))
            for frame in split.frames(segment, keys=()):
                ns = frame_ns(frame.index)
                for topic, msg in frame_messages(store, frame, ns).items():
                    writer.write(topic, ns + 1, msg)  # +1: after the instruction that applies to it
        tasks = {s.instruction: s.task for s in segments if s.task}
        writer.set_custom_data(TASKS_KEY, json.dumps(tasks))
    return Path(bag)


def bag_to_split(bag: str | os.PathLike, out_dir: str | os.PathLike, start_index: int = 0,
                 action_topic: str = T.EXPERT_TOPIC) -> CalvinSplit:
    """Write a bag's frames as a CALVIN split at `out_dir` (new or empty); returns it, opened."""
    source = BagSplit(bag, action_topic=action_topic)
    with CalvinRecorder(out_dir, start_index=start_index) as recorder:
        for segment in source.segments():
            for frame in source.frames(segment):
                recorder.add(frame)
            recorder.end_episode(segment.instruction, segment.task)
    return CalvinSplit(out_dir)
