"""The one segment loader and replay loop (deer_ros.calvin.replay) on real sample frames and a real tiny policy."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from deer_ros.calvin.dataset import EPISODE_IDS_FILE, LANG_FILE, CalvinDatasetError, CalvinSplit
from deer_ros.calvin.replay import load_segments, open_loop, replay
from deer_ros.exits.controller import FixedExit


@pytest.fixture(scope="module")
def policy():
    from deer_ros.model.config import DeerConfig
    from deer_ros.model.deer import build_model
    from deer_ros.model.policy import DeerPolicy
    from deer_ros.model.tokenizer import load_tokenizer

    torch.manual_seed(0)
    config = DeerConfig.preset("tiny")
    return DeerPolicy(build_model(config), load_tokenizer(config.tokenizer))


def test_segments_hold_the_splits_frames_and_instructions(small_split):
    split = CalvinSplit(small_split)
    eager, lazy = load_segments(split), load_segments(split, in_memory=False)
    assert [(s.index, s.instruction) for s in eager] == [(s.index, s.instruction) for s in split.segments()]
    for seg, again, raw in zip(eager, lazy, split.segments()):
        frames = list(split.frames(raw, keys=()))
        assert len(seg.frames) == len(again.frames) == len(frames)
        for a, b, f in zip(seg.frames, again.frames, frames):
            assert np.array_equal(a.static, f.rgb_static) and np.array_equal(b.gripper, f.rgb_gripper)
            assert np.array_equal(a.action, f.rel_actions)
    (capped,) = load_segments(split, "open_drawer", max_frames=3)
    assert capped.instruction == "pull the drawer" and len(capped.frames) == 3


def test_a_split_without_instructions_is_refused_with_the_reason(small_split):
    (small_split / LANG_FILE).unlink()
    assert (small_split / EPISODE_IDS_FILE).exists()
    with pytest.raises(CalvinDatasetError, match="segment 0 has no instruction"):
        load_segments(CalvinSplit(small_split))


def test_the_history_is_reset_at_each_segment_and_passes_repeat(small_split, policy):
    segments = load_segments(CalvinSplit(small_split), max_frames=4)
    both = [s.result.action for s in replay(policy, segments, FixedExit(2))]
    alone = [s.result.action for s in replay(policy, segments[1:], FixedExit(2))]
    assert np.array_equal(np.stack(both[4:]), np.stack(alone))  # segment 1 does not see segment 0's history
    twice = list(replay(policy, segments, FixedExit(2), passes=2))
    assert [s.segment.index for s in twice] == [0] * 4 + [1] * 4 + [0] * 4 + [1] * 4
    assert np.array_equal(np.stack([s.result.action for s in twice[8:]]), np.stack(both))


def test_open_loop_scores_the_actions_taken_against_the_recorded_ones(small_split, policy):
    segments = load_segments(CalvinSplit(small_split), max_frames=3)
    steps = list(replay(policy, segments, FixedExit(1)))
    m = open_loop(policy, segments, FixedExit(1)).to_json()["overall"]
    err = np.stack([s.result.action[:6] - s.frame.action[:6] for s in steps]).astype(np.float64)
    assert m["actions"] == 6 and m["exit_histogram"] == {"1": 6}
    assert m["pose_rmse"] == pytest.approx(np.sqrt(np.mean(err ** 2)), rel=1e-6)
