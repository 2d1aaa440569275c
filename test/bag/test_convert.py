"""CALVIN split -> bag -> CALVIN split on the bundled sample, with the bag checked by rosbags' own reader."""
from __future__ import annotations

import pytest

pytest.importorskip("rosbags", reason="needs the bag extra: pip install 'deer_ros[bag]'")

import numpy as np
from rosbags.interfaces import QosDurability
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from deer_ros.bag.convert import bag_to_split, split_to_bag
from deer_ros.bag.reader import BagSplit
from deer_ros.bag.types import MSG_DIR
from deer_ros.calvin.dataset import CalvinSplit


def test_split_to_bag_to_split_keeps_frames_actions_and_instructions(tmp_path, validation):
    bag = split_to_bag(validation, tmp_path / "bag")
    original = CalvinSplit(validation)
    back = bag_to_split(bag, tmp_path / "split", start_index=original.episodes[0][0])

    assert back.episodes == original.episodes
    assert [(s.start, s.end, s.instruction, s.task) for s in back.segments()] == \
        [(s.start, s.end, s.instruction, s.task) for s in original.segments()]
    for segment in original.segments():
        for a, b in zip(original.frames(segment, keys=()), back.frames(segment, keys=())):
            assert a.index == b.index
            np.testing.assert_array_equal(a.rgb_static, b.rgb_static)
            np.testing.assert_array_equal(a.rgb_gripper, b.rgb_gripper)
            np.testing.assert_array_equal(a.rel_actions, b.rel_actions)


def test_rosbags_reads_the_bag_with_types_definitions_qos_and_stamps(one_segment_bag, validation):
    """Read back with rosbags alone (a typestore built here, not deer_ros's), as `ros2 bag info` would see it."""
    segment = CalvinSplit(validation).segments("0")[0]
    store = get_typestore(Stores.ROS2_KILTED)
    action_def = (MSG_DIR / "EndEffectorAction.msg").read_text()
    store.register(get_types_from_msg(action_def, "deer_ros/msg/EndEffectorAction"))
    with Reader(one_segment_bag) as reader:
        topics = {c.topic: c for c in reader.connections}
        assert {t: c.msgtype for t, c in topics.items()} == {
            "camera/static/image_raw": "sensor_msgs/msg/Image", "camera/gripper/image_raw": "sensor_msgs/msg/Image",
            "instruction": "std_msgs/msg/String", "expert_action": "deer_ros/msg/EndEffectorAction",
            "/clock": "rosgraph_msgs/msg/Clock"}
        assert {t: c.msgcount for t, c in topics.items()} == {
            "camera/static/image_raw": len(segment), "camera/gripper/image_raw": len(segment), "instruction": 1,
            "expert_action": len(segment), "/clock": len(segment)}
        assert "float32[3] translation" in topics["expert_action"].msgdef.data
        assert topics["expert_action"].digest == store.hash_rihs01("deer_ros/msg/EndEffectorAction")
        assert topics["instruction"].ext.offered_qos_profiles[0].durability == QosDurability.TRANSIENT_LOCAL
        assert topics["camera/static/image_raw"].ext.offered_qos_profiles[0].durability == QosDurability.VOLATILE
        stamps = []
        for conn, log_ns, raw in reader.messages(connections=[topics["expert_action"]]):
            msg = store.deserialize_cdr(raw, conn.msgtype)
            stamps.append(msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec)
            assert log_ns >= stamps[-1]  # logged once the observation it answers exists
    # The bridge's 30 Hz sim time of the CALVIN frame index.
    assert stamps == [round(i * 1e9 / 30) for i in segment.frames]


def test_a_bag_is_a_split_for_anything_that_takes_one(one_segment_bag):
    split = BagSplit(one_segment_bag)
    (segment,) = split.segments("turn_off_led")  # task ids come back from the bag's custom_data
    assert (segment.start, len(segment)) == (0, 45) and split.dropped == {}
    frame = next(split.frames(segment))
    assert frame.rgb_static.shape == (200, 200, 3) and frame.rgb_gripper.shape == (84, 84, 3)
