"""CalvinRecorder: a split written from the real sample reads back identical, and recording is crash-safe."""
from __future__ import annotations

import numpy as np
import pytest

from deer_ros.calvin.dataset import (ALL_KEYS, EPISODE_IDS_FILE, LANG_FILE, CalvinDatasetError, CalvinSplit,
                                     frame_filename)
from deer_ros.calvin.recorder import EPISODE_LENGTHS_FILE, CalvinRecorder


def _assert_same_frame(a, b) -> None:
    for key in ALL_KEYS:
        x, y = getattr(a, key), getattr(b, key)
        assert (x is None) == (y is None), key
        if x is not None:
            assert x.dtype == y.dtype, key
            np.testing.assert_array_equal(x, y, err_msg=key)


def test_round_trip_of_the_validation_split(sample_root, tmp_path):
    source = CalvinSplit(sample_root / "validation")
    out = tmp_path / "copy"
    first = source.episodes[0][0]
    with CalvinRecorder(out, start_index=first) as rec:
        for segment in source.segments():
            for frame in source.frames(segment):
                rec.add(frame)
            rec.end_episode(segment.instruction, segment.task)
    copy = CalvinSplit(out)
    assert copy.episodes == source.episodes
    assert copy.segments() == source.segments()
    for index in range(first, first + len(source)):
        _assert_same_frame(copy.frame(index), source.frame(index))
    # The files themselves have the sample's layout: same keys, dtypes and shapes, and the same index arrays.
    reference = sample_root / "validation" / frame_filename(first)
    with np.load(out / frame_filename(first)) as mine, np.load(reference) as ref:
        assert {k: (mine[k].dtype, mine[k].shape) for k in mine.files} == \
               {k: (ref[k].dtype, ref[k].shape) for k in ref.files}
    for name in (EPISODE_IDS_FILE, EPISODE_LENGTHS_FILE):
        mine, ref = np.load(out / name), np.load(sample_root / "validation" / name)
        assert mine.dtype == ref.dtype
        np.testing.assert_array_equal(mine, ref)
    mine = np.load(out / LANG_FILE, allow_pickle=True).item()
    ref = np.load(sample_root / "validation" / LANG_FILE, allow_pickle=True).item()
    assert mine == ref


def _frame(value: float, with_obs: bool = True) -> dict:
    rng = np.random.default_rng(int(value * 1000))
    frame = {"rgb_static": rng.integers(0, 255, (16, 16, 3), dtype=np.uint8),
             "rgb_gripper": rng.integers(0, 255, (8, 8, 3), dtype=np.uint8),
             "rel_actions": np.array([value, 0, 0, 0, 0, 0, 1.0])}
    if with_obs:
        frame["robot_obs"] = np.full(15, value)
    return frame


def test_unfinished_episode_is_not_listed_until_closed(tmp_path):
    rec = CalvinRecorder(tmp_path / "run")
    for i in range(3):
        rec.add_frame(**_frame(i / 10))
    rec.end_episode()
    rec.add_frame(**_frame(0.5))
    rec.add_frame(**_frame(0.6))
    # A crash here: the split on disk holds the finished episode only, and no half-written file.
    split = CalvinSplit(tmp_path / "run")
    assert split.episodes == [(0, 2)] and not split.annotated
    assert not list((tmp_path / "run").glob(".*tmp"))
    rec.close("lift the block", "lift_red_block_table")
    split = CalvinSplit(tmp_path / "run")
    assert split.episodes == [(0, 2), (3, 4)]
    assert [(s.start, s.end, s.instruction) for s in split.segments()] == [(3, 4, "lift the block")]
    assert split.frame(4).rel_actions[0] == pytest.approx(0.6)
    assert split.frame(4).actions is None


def test_annotate_part_of_an_episode_and_append(tmp_path):
    with CalvinRecorder(tmp_path / "run", start_index=100) as rec:
        for i in range(6):
            rec.add_frame(**_frame(i / 10))
        assert rec.end_episode() == (100, 105)
        rec.annotate(101, 103, "open the drawer", "open_drawer")
    with CalvinRecorder(tmp_path / "run", append=True) as rec:
        assert rec.add_frame(**_frame(0.9)) == 106
        rec.end_episode("close the drawer", "close_drawer")
    split = CalvinSplit(tmp_path / "run")
    assert split.episodes == [(100, 105), (106, 106)]
    assert [(s.start, s.end, s.task) for s in split.segments()] == [(101, 103, "open_drawer"),
                                                                   (106, 106, "close_drawer")]


def test_refuses_a_non_empty_folder_and_bad_frames(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("x")
    with pytest.raises(CalvinDatasetError, match="busy: not empty"):
        CalvinRecorder(tmp_path / "busy")
    rec = CalvinRecorder(tmp_path / "run")
    bad = _frame(0.1)
    bad["rgb_static"] = bad["rgb_static"].astype(np.float32)
    with pytest.raises(CalvinDatasetError, match="'rgb_static' must be a uint8.*the frame was not written"):
        rec.add_frame(**bad)
    bad = _frame(0.1)
    bad["rel_actions"] = np.array([np.nan] * 7)
    with pytest.raises(CalvinDatasetError, match="'rel_actions' contains NaN"):
        rec.add_frame(**bad)
    assert not list((tmp_path / "run").iterdir())
    with pytest.raises(RuntimeError, match="without frames"):
        rec.end_episode()
    rec.add_frame(**_frame(0.1))
    rec.end_episode()
    with pytest.raises(ValueError, match="not inside one finished episode"):
        rec.annotate(0, 1, "x")
    rec.close()
    with pytest.raises(RuntimeError, match="closed"):
        rec.add_frame(**_frame(0.2))
