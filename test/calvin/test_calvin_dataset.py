"""CalvinSplit on the real CALVIN sample, and on small copies broken in the ways real datasets break."""
from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
from calvin_helpers import SMALL_EPISODES, write_annotations

from deer_ros.calvin.dataset import (EPISODE_IDS_FILE, LANG_FILE, CalvinDatasetError, CalvinSplit, Segment,
                                     frame_filename, training_windows)


@pytest.fixture(scope="module")
def episodes_json(sample_root) -> list[dict]:
    return json.loads((sample_root / "episodes.json").read_text())["episodes"]


# --------------------------------------------------------------------------- the real sample
@pytest.mark.parametrize("name", ["training", "validation"])
def test_sample_segments_match_the_sample_manifest(sample_root, episodes_json, name):
    split = CalvinSplit(sample_root / name)
    expected = [e for e in episodes_json if e["split"] == name]
    assert split.annotated
    assert [(s.start, s.end, s.instruction, s.task) for s in split.segments()] == [
        (e["start"], e["end"], e["instruction"], e["task"]) for e in expected]
    assert split.episodes == [(e["start"], e["end"]) for e in expected]
    assert len(split) == sum(e["n_frames"] for e in expected)
    assert [s.index for s in split.segments()] == list(range(len(expected)))


def test_frame_holds_the_file_contents_in_documented_dtypes(sample_root):
    split = CalvinSplit(sample_root / "validation")
    frame = split.frame(600)
    raw = np.load(sample_root / "validation" / frame_filename(600))
    assert frame.index == 600
    assert frame.rgb_static.dtype == np.uint8 and frame.rgb_static.shape == (200, 200, 3)
    assert frame.rgb_gripper.dtype == np.uint8 and frame.rgb_gripper.shape == (84, 84, 3)
    np.testing.assert_array_equal(frame.rgb_static, raw["rgb_static"])
    np.testing.assert_array_equal(frame.rgb_gripper, raw["rgb_gripper"])
    assert frame.rel_actions.dtype == np.float32
    np.testing.assert_array_equal(frame.rel_actions, raw["rel_actions"].astype(np.float32))
    for key in ("actions", "robot_obs", "scene_obs"):
        value = getattr(frame, key)
        assert value.dtype == np.float64
        np.testing.assert_array_equal(value, raw[key])


def test_frame_loads_only_the_optional_keys_asked_for(sample_root):
    split = CalvinSplit(sample_root / "validation")
    frame = split.frame(549, keys=())
    assert frame.actions is None and frame.robot_obs is None and frame.scene_obs is None
    assert frame.rel_actions.shape == (7,)
    assert split.frame(549, keys=["robot_obs"]).robot_obs.shape == (15,)
    with pytest.raises(ValueError, match="unknown frame keys"):
        split.frame(549, keys=["depth_static_typo"])


def test_frames_iterates_a_segment_in_order(small_split):
    split = CalvinSplit(small_split)
    assert split.episodes == SMALL_EPISODES
    segment = split.segments()[1]
    assert [f.index for f in split.frames(segment, keys=())] == list(range(48, 58))


def test_selection_by_index_and_task_in_the_order_given(sample_root):
    split = CalvinSplit(sample_root / "training")
    assert [s.task for s in split.segments("2, open_drawer,0")] == ["move_slider_left", "open_drawer",
                                                                    "turn_on_led"]
    assert [s.index for s in split.segments([3, "lift_red_block_table", 3])] == [3]
    assert split.segments(5) == [split.segments()[5]]
    assert split.segments("") == split.segments(None) == split.segments([]) == split.segments()
    assert split.select_segments("1") == [(1, split.segments()[1])]


def test_selection_errors_say_what_exists(sample_root):
    split = CalvinSplit(sample_root / "training")
    with pytest.raises(CalvinDatasetError, match=r"segment 8 does not exist.*8 segments \(0\.\.7\)"):
        split.segments("8")
    with pytest.raises(CalvinDatasetError, match="no segment of task 'fly_away'.*open_drawer"):
        split.segments(["fly_away"])


def test_split_without_annotations_uses_episodes_and_says_so(small_split, caplog):
    os.remove(small_split / LANG_FILE)
    with caplog.at_level(logging.WARNING, logger="deer_ros.calvin.dataset"):
        split = CalvinSplit(small_split)
    assert "no language annotations" in caplog.text
    assert not split.annotated
    assert split.segments() == [Segment(0, 0, 9, "", ""), Segment(1, 48, 57, "", "")]
    with pytest.raises(CalvinDatasetError, match="no task annotations"):
        split.segments("open_drawer")


def test_annotations_may_cover_part_of_an_episode_and_overlap(small_split):
    write_annotations(small_split, [(2, 7), (4, 9)], ["a", "b"], ["turn_on_led", "turn_on_led"])
    split = CalvinSplit(small_split)
    assert [(s.start, s.end) for s in split.segments("turn_on_led")] == [(2, 7), (4, 9)]


# --------------------------------------------------------------------------- training windows
def test_training_windows_every_start_that_fits(sample_root):
    segments = CalvinSplit(sample_root / "training").segments()
    windows = training_windows(segments, 12)
    assert len(windows) == sum(len(s) - 11 for s in segments)
    for segment, start in windows:
        assert segment.start <= start and start + 11 <= segment.end
    starts = [start for segment, start in windows if segment.index == 0]
    assert starts == list(range(0, 47 - 11 + 1))


def test_training_windows_edge_cases():
    short, exact = Segment(0, 10, 14, "x", "t"), Segment(1, 20, 31, "y", "t")
    assert training_windows([short, exact], 12) == [(exact, 20)]
    assert training_windows([short], 1) == [(short, i) for i in range(10, 15)]
    with pytest.raises(ValueError, match="window must be >= 1"):
        training_windows([short], 0)


# --------------------------------------------------------------------------- broken datasets
def test_missing_folder_is_named(tmp_path):
    with pytest.raises(CalvinDatasetError, match=f"{tmp_path / 'nowhere'}: CALVIN split folder not found"):
        CalvinSplit(tmp_path / "nowhere")


def test_dataset_root_instead_of_split_gets_a_hint(small_split):
    with pytest.raises(CalvinDatasetError, match="looks like a dataset root: give .*training instead"):
        CalvinSplit(small_split.parent)


@pytest.mark.parametrize("ids, problem", [
    (np.zeros((3,), dtype=np.int64), r"shape \(N, 2\)"),
    (np.zeros((0, 2), dtype=np.int64), r"shape \(N, 2\)"),
    (np.array([[0.0, 9.0]]), r"integer array"),
    (np.array([[9, 0]]), r"\[9, 0\] is not a valid inclusive frame range"),
    (np.array([[0, 9], [5, 12]]), r"\[5, 12\] overlaps the one ending at 9"),
])
def test_malformed_episode_ids(small_split, ids, problem):
    np.save(small_split / EPISODE_IDS_FILE, ids)
    with pytest.raises(CalvinDatasetError, match=f"{EPISODE_IDS_FILE}: .*{problem}"):
        CalvinSplit(small_split)


def test_episode_ids_missing_or_garbage(small_split):
    (small_split / EPISODE_IDS_FILE).write_bytes(b"not numpy")
    with pytest.raises(CalvinDatasetError, match=f"{EPISODE_IDS_FILE}: cannot be read"):
        CalvinSplit(small_split)
    os.remove(small_split / EPISODE_IDS_FILE)
    with pytest.raises(CalvinDatasetError, match=f"{EPISODE_IDS_FILE}: file not found"):
        CalvinSplit(small_split)


def test_missing_frame_file_is_named(small_split):
    os.remove(small_split / frame_filename(50))
    with pytest.raises(CalvinDatasetError, match=r"episode_0000050\.npz: missing \(1 frame file"):
        CalvinSplit(small_split)


@pytest.mark.parametrize("content, problem", [
    (["not", "a", "dict"], "not a CALVIN annotation file"),
    ({"info": {"indx": [(0, 9)]}}, "not a CALVIN annotation file"),
    ({"info": {"indx": [(0, 9)]}, "language": {"ann": ["a", "b"], "task": ["t", "t"]}}, "equal length"),
    ({"info": {"indx": [(0, 9)]}, "language": {"ann": [3], "task": ["t"]}}, "annotation 0 is malformed"),
    ({"info": {"indx": [7]}, "language": {"ann": ["a"], "task": ["t"]}}, r"indx\[0\] = 7 is not a"),
    ({"info": {"indx": [(5, 20)]}, "language": {"ann": ["a"], "task": ["t"]}},
     r"covers frames \[5, 20\] but episode_0000010\.npz and 10 more are not in the split"),
])
def test_malformed_annotations(small_split, content, problem):
    np.save(small_split / LANG_FILE, np.array(content, dtype=object), allow_pickle=True)
    with pytest.raises(CalvinDatasetError, match=f"auto_lang_ann.npy: .*{problem}"):
        CalvinSplit(small_split)


def _rewrite_frame(split, index, **changes):
    """Rewrite one frame with some keys replaced (value) or removed (None)."""
    path = split / frame_filename(index)
    with np.load(path) as npz:
        data = {k: npz[k] for k in npz.files}
    for key, value in changes.items():
        if value is None:
            del data[key]
        else:
            data[key] = value
    np.savez_compressed(path, **data)


@pytest.mark.parametrize("changes, problem", [
    ({"rel_actions": None}, r"missing key\(s\) \['rel_actions'\]"),
    ({"rgb_gripper": None}, r"missing key\(s\) \['rgb_gripper'\]"),
    ({"rgb_static": np.zeros((200, 200, 3), np.float32)}, "'rgb_static' must be a uint8 \\(H, W, 3\\)"),
    ({"rgb_static": np.zeros((200, 200), np.uint8)}, "'rgb_static' must be a uint8 \\(H, W, 3\\)"),
    ({"rel_actions": np.zeros(6)}, r"'rel_actions' must be a float vector of shape \(7,\)"),
    ({"robot_obs": np.zeros(15, np.int64)}, r"'robot_obs' must be a float vector"),
    ({"scene_obs": np.full(24, np.nan)}, "'scene_obs' contains NaN"),
])
def test_malformed_first_frame_fails_on_open(small_split, changes, problem):
    _rewrite_frame(small_split, 48, **changes)
    with pytest.raises(CalvinDatasetError, match=f"episode_0000048.npz: {problem}"):
        CalvinSplit(small_split)


def test_optional_keys_may_be_absent(small_split):
    _rewrite_frame(small_split, 0, actions=None, scene_obs=None)
    frame = CalvinSplit(small_split).frame(0)
    assert frame.actions is None and frame.scene_obs is None and frame.robot_obs is not None


def test_corrupt_frame_later_in_an_episode_fails_when_read(small_split):
    path = small_split / frame_filename(5)
    path.write_bytes(path.read_bytes()[:300])  # truncated copy
    split = CalvinSplit(small_split)  # only the first frame of each episode is opened up front
    with pytest.raises(CalvinDatasetError, match=r"episode_0000005\.npz: .*re-copy"):
        split.frame(5)
    np.save(small_split / "single.npy", np.zeros(3))
    os.replace(small_split / "single.npy", path)
    with pytest.raises(CalvinDatasetError, match="holds a single array, not an npz archive"):
        split.frame(5)

