"""Bags that cannot be read as frames: each error says what is wrong and what to do, and nothing is changed."""
from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest

pytest.importorskip("rosbags", reason="needs the bag extra: pip install 'deer_ros[bag]'")

from rosbags.rosbag2 import Reader

from deer_ros.bag import types as T
from deer_ros.bag.convert import frame_messages, frame_ns
from deer_ros.bag.reader import BagError, BagSplit
from deer_ros.bag.repair import BagRepairError, repair_bag
from deer_ros.bag.writer import BagWriter
from deer_ros.calvin.dataset import Frame


def _frame(i: int) -> Frame:
    rng = np.random.default_rng(i)
    return Frame(i, rng.integers(0, 255, (8, 8, 3), dtype=np.uint8), rng.integers(0, 255, (4, 4, 3), dtype=np.uint8),
                 rng.uniform(-1, 1, 7).astype(np.float32))


def _write(path, indices, topics=T.DEFAULT_TOPICS):
    with BagWriter(path) as writer:
        for spec in topics:
            writer.add_topic(spec)
        writer.write(T.INSTRUCTION_TOPIC, 0, writer.store.types[T.STRING](data="open the drawer"))
        for log_i, i in enumerate(indices):
            for topic, msg in frame_messages(writer.store, _frame(i), frame_ns(i)).items():
                if topic in writer._connections:
                    writer.write(topic, frame_ns(log_i) + 1, msg)
    return path


def test_missing_topics_are_named_with_what_the_bag_has(one_segment_bag):
    with pytest.raises(BagError, match=r"topic\(s\) \['action'\] not in the bag .*expert_action"):
        BagSplit(one_segment_bag, action_topic="action")


def test_a_topic_of_another_type_is_refused(tmp_path):
    topics = [T.TopicSpec(T.STATIC_TOPIC, T.STRING), *T.DEFAULT_TOPICS[1:]]
    with BagWriter(tmp_path / "bag") as writer:
        for spec in topics:
            writer.add_topic(spec)
    with pytest.raises(BagError, match=r"'camera/static/image_raw' has type std_msgs/msg/String, expected "
                                       r"sensor_msgs/msg/Image"):
        BagSplit(tmp_path / "bag")


def test_header_stamps_going_backwards_are_refused(tmp_path):
    bag = _write(tmp_path / "bag", [0, 1, 2, 1, 3])
    with pytest.raises(BagError, match=r"stamps go backwards at message 3 .*Re-record with one clock"):
        BagSplit(bag)


def test_frames_without_partners_are_counted_not_invented(tmp_path):
    bag = _write(tmp_path / "bag", [0, 1, 2], topics=[t for t in T.DEFAULT_TOPICS if t.name != T.EXPERT_TOPIC])
    with pytest.raises(BagError, match="no static image has a matching gripper image and action"):
        BagSplit(bag, action_topic=T.POLICY_TOPIC)


def test_a_truncated_bag_says_repair_and_repair_recovers_the_complete_part(tmp_path, one_segment_bag):
    bag = tmp_path / "cut"
    shutil.copytree(one_segment_bag, bag)
    mcap = next(bag.glob("*.mcap"))
    data = mcap.read_bytes()
    mcap.write_bytes(data[: len(data) // 2])  # a partial copy: half the chunks, no summary, no footer
    with pytest.raises(BagError, match=r"not a readable bag .*deer-ros bag repair"):
        BagSplit(bag)

    out, count = repair_bag(bag)
    assert mcap.read_bytes() == data[: len(data) // 2]  # the damaged bag is left as it was
    with Reader(out) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
    assert count == sum(counts.values()) and 0 < counts["camera/static/image_raw"] < 45
    repaired = BagSplit(out)
    assert 0 < len(repaired) < 45
    with pytest.raises(BagRepairError, match="exists already"):
        repair_bag(bag)


def test_a_file_that_is_not_a_bag_gets_a_clear_error(tmp_path):
    (tmp_path / "notabag").mkdir()
    with pytest.raises(BagError, match=r"no metadata.yaml.*deer-ros bag repair"):
        BagSplit(tmp_path / "notabag")
    with pytest.raises(BagError, match="bag not found"):
        BagSplit(tmp_path / "missing")
    (tmp_path / "notabag" / "x.mcap").write_bytes(b"hello")
    with pytest.raises(BagRepairError, match="not an MCAP file"):
        repair_bag(tmp_path / "notabag")


def test_nothing_is_written_over(tmp_path, one_segment_bag, validation):
    from deer_ros.bag.convert import bag_to_split, split_to_bag
    from deer_ros.calvin.dataset import CalvinDatasetError

    (tmp_path / "split").mkdir()
    (tmp_path / "split" / "keep.txt").write_text("mine")
    with pytest.raises(CalvinDatasetError, match="not empty"):
        bag_to_split(one_segment_bag, tmp_path / "split")
    with pytest.raises(FileExistsError, match="never overwritten"):
        split_to_bag(validation, one_segment_bag, select="0")
    assert (tmp_path / "split" / "keep.txt").read_text() == "mine"
    assert BagSplit(one_segment_bag).episodes == [(0, 44)]


def test_the_command_prints_the_error_and_exits_2(tmp_path, capsys):
    from deer_ros.bag.cli import bag_main

    assert bag_main(["to-calvin", str(tmp_path / "nope"), str(tmp_path / "out")]) == 2
    assert "bag not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_missing_extras_name_their_install_command(monkeypatch):
    from deer_ros.bag.types import rosbags
    from deer_ros.dependencies import MissingDependency, require

    monkeypatch.setitem(sys.modules, "rosbags", None)
    monkeypatch.setitem(sys.modules, "rerun", None)
    with pytest.raises(MissingDependency, match=r"rosbag2 bags needs .*'rosbags'.*deer_ros\[bag\]"):
        rosbags()
    with pytest.raises(MissingDependency, match=r"deer_ros\[viz\]"):
        require("rerun", "logging a run to Rerun")


def test_a_sqlite3_recording_cut_off_after_a_flush_is_repaired(tmp_path):
    """What a killed sqlite3 recorder leaves on disk: the .db3 as of the last flush, no metadata.yaml."""
    writer = BagWriter(tmp_path / "live", storage="sqlite3")
    for spec in T.DEFAULT_TOPICS:
        writer.add_topic(spec)
    writer.write(T.INSTRUCTION_TOPIC, 0, writer.store.types[T.STRING](data="open the drawer"))
    for i in range(3):
        for topic, msg in frame_messages(writer.store, _frame(i), frame_ns(i)).items():
            writer.write(topic, frame_ns(i) + 1, msg)
    writer.flush()
    shutil.copytree(tmp_path / "live", tmp_path / "killed")  # the state a SIGKILL would leave
    writer.close()
    assert not (tmp_path / "killed" / "metadata.yaml").exists()

    out, count = repair_bag(tmp_path / "killed")
    assert count == 1 + 3 * 4
    split = BagSplit(out)
    assert len(split) == 3 and split.segments()[0].instruction == "open the drawer"
    np.testing.assert_array_equal(split.frame(2).rgb_static, _frame(2).rgb_static)
