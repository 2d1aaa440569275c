"""`deer-ros bag record` as its own process, fed by real rclpy publishers: a clean stop writes a complete bag, a
SIGKILL leaves one that `repair` turns into a complete bag holding every message flushed before the kill."""
from __future__ import annotations

import signal
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rosbags", reason="needs the bag extra: pip install 'deer_ros[bag]'")

from rosbags.rosbag2 import Reader
from sensor_msgs.msg import Image
from std_msgs.msg import String

from deer_ros.bag.reader import BagError, BagSplit
from deer_ros.bag.repair import repair_bag
from deer_ros.msg import EndEffectorAction
from deer_ros.ros.launcher import NodeProcess, ros_env

pytestmark = pytest.mark.ros
FRAMES = 12


@pytest.fixture
def start_recorder(ros_domain, tmp_path):
    started: list[NodeProcess] = []

    def start(bag: Path) -> NodeProcess:
        argv = [sys.executable, "-m", "deer_ros.cli", "bag", "record", str(bag),
                "--topics", "camera/static/image_raw,camera/gripper/image_raw,instruction,expert_action"]
        started.append(NodeProcess("bag_recorder", argv, ros_env(ros_domain), tmp_path / "recorder.log"))
        return started[-1]

    yield start
    for proc in started:
        if proc.running:
            proc.stop(signal.SIGKILL)


def _publish_run(client, recorder_subscribed) -> list[np.ndarray]:
    """The instruction (latched, published before the recorder may be listening), then FRAMES frames."""
    client.sim_time = False  # stamps from the node clock, no /clock
    client.publish_instruction("open the drawer")
    pubs = [client.publisher(Image, "camera/static/image_raw"), client.publisher(Image, "camera/gripper/image_raw"),
            client.publisher(EndEffectorAction, "expert_action"), client.publisher(String, "instruction")]
    client.spin_until(lambda: all(recorder_subscribed(p) for p in pubs), 30, "the recorder's subscriptions")
    client.spin_for(0.5)  # the latched instruction reaches the late-joining recorder before the first frame
    images = []
    for i in range(FRAMES):
        rgb = np.full((6, 8, 3), i, dtype=np.uint8)
        stamp = client.send_observation(client.node.get_clock().now().to_msg(), static=rgb, gripper=rgb[:4, :4])
        action = EndEffectorAction()
        action.header.stamp = stamp
        action.translation = [0.1 * i, 0.0, 0.0]
        client.publisher(EndEffectorAction, "expert_action").publish(action)
        images.append(rgb)
        client.spin_for(0.02)
    return images


def _subscribed(pub) -> bool:
    return pub.get_subscription_count() > 0


def _recovered_frames(bag: Path) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            return len(BagSplit(repair_bag(bag, Path(tmp) / "r")[0]))
        except (BagError, ValueError):
            return 0


def test_a_stopped_recording_is_a_complete_bag(client, start_recorder, tmp_path):
    bag = tmp_path / "run"
    recorder = start_recorder(bag)
    images = _publish_run(client, _subscribed)
    client.spin_for(1.0)  # the recorder is another process: let the last frames arrive
    assert recorder.stop(signal.SIGINT) == 0, recorder.output()

    with Reader(bag) as reader:  # rosbags' own reader: metadata.yaml is complete
        counts = {c.topic: c.msgcount for c in reader.connections}
        qos = {c.topic: c.ext.offered_qos_profiles[0].durability.name for c in reader.connections}
    assert counts == {"camera/static/image_raw": FRAMES, "camera/gripper/image_raw": FRAMES, "instruction": 1,
                      "expert_action": FRAMES}
    assert qos["instruction"] == "TRANSIENT_LOCAL" and qos["expert_action"] == "VOLATILE"
    split = BagSplit(bag)
    (segment,) = split.segments()
    assert segment.instruction == "open the drawer" and len(segment) == FRAMES
    for frame, rgb in zip(split.frames(segment), images):
        np.testing.assert_array_equal(frame.rgb_static, rgb)
    assert [float(f.rel_actions[0]) for f in split.frames(segment)] == pytest.approx([0.1 * i for i in range(FRAMES)])


def test_a_killed_recording_is_repaired_into_a_bag_without_losing_flushed_messages(client, start_recorder, tmp_path):
    bag = tmp_path / "run"
    recorder = start_recorder(bag)
    images = _publish_run(client, _subscribed)
    # The recorder flushes once a second; wait until everything published is on disk, then kill it.
    client.spin_until(lambda: _recovered_frames(bag) == FRAMES, 30, "all frames flushed to the bag file")
    assert recorder.stop(signal.SIGKILL) == -signal.SIGKILL

    assert not (bag / "metadata.yaml").exists()
    with pytest.raises(BagError, match="deer-ros bag repair"):
        BagSplit(bag)
    repaired, count = repair_bag(bag)
    with Reader(repaired) as reader:
        assert {c.topic: c.msgcount for c in reader.connections}["camera/static/image_raw"] == FRAMES
        assert count == reader.message_count == 3 * FRAMES + 1
    split = BagSplit(repaired)
    assert split.segments()[0].instruction == "open the drawer"
    np.testing.assert_array_equal(split.frame(FRAMES - 1).rgb_static, images[-1])
