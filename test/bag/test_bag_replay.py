"""calvin_bridge playing a rosbag2 bag in lockstep into deer_policy, two processes over DDS, as it plays a split."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("rosbags", reason="needs the bag extra: pip install 'deer_ros[bag]'")

from deer_ros.calvin.dataset import CalvinSplit
from deer_ros.msg import EndEffectorAction

pytestmark = pytest.mark.ros


def _stamp(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def test_the_bridge_plays_a_bag_in_lockstep_and_every_frame_is_answered(launch_node, client, tmp_path,
                                                                         one_segment_bag, validation):
    report = tmp_path / "evaluation.json"
    expert = client.collect(EndEffectorAction, "expert_action")
    actions = client.collect(EndEffectorAction, "action")
    launch_node("deer_policy_node", params={"use_sim_time": True})
    bridge = launch_node("calvin_bridge_node", params={"dataset": str(one_segment_bag), "lockstep": True,
                                                       "report_path": str(report), "exit_when_done": True})
    client.spin_until(lambda: not bridge.running, 240, "the bridge to play the bag")
    assert bridge.wait(timeout=5) == 0, bridge.output()[-3000:]
    client.spin_for(0.5)
    segment = CalvinSplit(validation).segments("0")[0]
    summary = json.loads(report.read_text())
    assert summary["bridge"]["dataset"] == str(one_segment_bag)
    assert summary["bridge"]["frames_sent"] == summary["overall"]["actions"] == len(segment)
    assert summary["bridge"]["unanswered"] == 0
    assert summary["segments"]["0"]["name"] == segment.instruction
    # On the wire: the bag's recorded actions as expert_action, one policy action for each of their stamps.
    recorded = np.array([f.rel_actions for f in CalvinSplit(validation).frames(segment, keys=())])
    first = {}
    for msg in expert:
        first.setdefault(_stamp(msg), np.array([*msg.translation, *msg.rotation, msg.gripper], np.float32))
    np.testing.assert_array_equal(np.array([first[k] for k in sorted(first)]), recorded)
    assert {_stamp(a) for a in actions} == set(first)
    # The policy's actions carry the criterion values it decided on: one per exit examined, up to the chosen one.
    assert all(len(a.criterion_values) == a.exit_index for a in actions)


def test_a_bag_without_recorded_actions_is_played_and_not_scored(launch_node, client, tmp_path, one_segment_bag):
    report = tmp_path / "evaluation.json"
    expert = client.collect(EndEffectorAction, "expert_action")
    launch_node("deer_policy_node", params={"use_sim_time": True})
    bridge = launch_node("calvin_bridge_node", params={
        "dataset": str(one_segment_bag), "bag_topics": "action=", "max_frames": 10, "report_path": str(report),
        "exit_when_done": True})
    client.spin_until(lambda: not bridge.running, 240, "the bridge to play the bag")
    assert bridge.wait(timeout=5) == 0, bridge.output()[-3000:]
    summary = json.loads(report.read_text())
    assert summary["bridge"]["frames_sent"] == 10 and summary["bridge"]["unanswered"] == 0
    assert summary["overall"]["actions"] == 0 and expert == []


def test_bag_sources_the_bridge_cannot_play_are_refused_with_a_reason(launch_node, one_segment_bag, tmp_path):
    sim = launch_node("calvin_bridge_node", params={"mode": "sim", "dataset": str(one_segment_bag)})
    wrong_topic = launch_node("calvin_bridge_node", params={"dataset": str(one_segment_bag),
                                                            "bag_topics": "static=/front/image_raw"})
    for proc in (sim, wrong_topic):
        proc.expected_exit_code = 2
        assert proc.wait(timeout=60) == 2
    assert "a bag: the simulator starts from recorded robot and scene states" in sim.output()
    assert "'/front/image_raw'" in wrong_topic.output() and "not in the bag" in wrong_topic.output()
