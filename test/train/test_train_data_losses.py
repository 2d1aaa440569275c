"""Training data (windows, preprocessing, random shift) and the multi-exit losses / exit sampling."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from deer_ros.calvin.dataset import CalvinDatasetError, CalvinSplit
from deer_ros.model.head import HeadOutput
from deer_ros.train.data import WindowDataset, random_shift, scaled_shift_pads
from deer_ros.train.losses import (action_loss, gather_exits, multi_exit_loss, sample_exits_per_step,
                                   sample_exits_two_segments)


# ------------------------------------------------------------------ random shift
def test_shift_pads_scale_with_image_size():
    assert scaled_shift_pads(224) == (10, 4)  # the reference's aug_10_4
    assert scaled_shift_pads(64) == (3, 1)
    assert scaled_shift_pads(16) == (1, 1)  # never 0: the augmentation would silently vanish


def test_random_shift_is_a_crop_of_the_replicate_padded_image():
    g = torch.Generator().manual_seed(0)
    images = torch.randn(40, 3, 9, 9)
    pad = 2
    out = random_shift(images, pad, g)
    assert out.shape == images.shape
    padded = torch.nn.functional.pad(images, (pad,) * 4, mode="replicate")
    offsets = []
    for n in range(len(images)):
        match = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                 if torch.equal(out[n], padded[n, :, dy:dy + 9, dx:dx + 9])]
        assert match, f"image {n} is not an integer crop of the padded image"
        offsets.append(match[0])
    assert len(set(offsets)) > 5  # per-image offsets, not one for the batch
    assert torch.equal(random_shift(images, 0, g), images)


# ------------------------------------------------------------------ windows
def test_window_dataset_on_real_frames(small_dataset, tiny_inputs):
    _, preprocess, prompts = tiny_inputs
    split = CalvinSplit(small_dataset / "training")
    segments = split.segments()
    data = WindowDataset(split, segments, preprocess, prompts, window=4)
    assert len(data) == sum(len(s) - 3 for s in segments) == 14
    assert data.shift_pads == (3, 1)
    batch = data.batch([0, 13])
    assert batch.images.shape == (2, 4, 2, 3, 64, 64) and batch.actions.shape == (2, 4, 7)
    # window 13 is the last of the second segment: its frames and labels are that segment's last four
    last = list(segments[1].frames)[-4:]
    for t, index in enumerate(last):
        frame = split.frame(index)
        np.testing.assert_array_equal(batch.actions[1, t].numpy(), frame.rel_actions)
        torch.testing.assert_close(batch.images[1, t, 0], preprocess.one(frame.rgb_static))
        torch.testing.assert_close(batch.images[1, t, 1], preprocess.one(frame.rgb_gripper))
    expected = prompts([segments[0].instruction, segments[1].instruction])
    assert torch.equal(batch.prompt.input_ids, expected.input_ids)
    shifted = data.batch([0, 13], augment=True, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(shifted.images, batch.images)
    assert torch.equal(shifted.actions, batch.actions)


def test_window_dataset_refuses_unusable_segments(small_dataset, tiny_inputs):
    _, preprocess, prompts = tiny_inputs
    split = CalvinSplit(small_dataset / "training")
    with pytest.raises(CalvinDatasetError, match="no segment is 12 frames long"):
        WindowDataset(split, split.segments(), preprocess, prompts, window=12)
    unannotated = [s.__class__(s.index, s.start, s.end, "", s.task) for s in split.segments()]
    with pytest.raises(CalvinDatasetError, match="no instruction"):
        WindowDataset(split, unannotated, preprocess, prompts, window=4)


# ------------------------------------------------------------------ exit sampling
def test_strategy1_draws_every_exit_per_step():
    g = torch.Generator().manual_seed(0)
    choice = sample_exits_per_step(64, 12, 3, g)
    assert choice.shape == (64, 12) and choice.dtype == torch.int64
    assert set(choice.unique().tolist()) == {0, 1, 2}  # the last exit included
    assert len({tuple(row) for row in choice.tolist()}) > 50  # independent per step


def test_strategy2_is_two_segments_with_one_split_per_batch():
    g = torch.Generator().manual_seed(0)
    splits = []
    for _ in range(200):
        choice = sample_exits_two_segments(16, 12, 6, g)
        assert choice.shape == (16, 12) and 0 <= choice.min() and choice.max() <= 5
        first, last = choice[:, :1], choice[:, -1:]
        # every row is constant up to the split, then constant from it; all rows share the split
        row_splits = {int((row != row[0]).nonzero()[0]) if (row != row[0]).any() else None for row in choice}
        row_splits.discard(None)
        assert len(row_splits) <= 1
        if row_splits:
            s = row_splits.pop()
            assert 1 <= s <= 11
            assert torch.equal(choice[:, :s], first.expand(-1, s))
            assert torch.equal(choice[:, s:], last.expand(-1, 12 - s))
            splits.append(s)
    assert len(set(splits)) >= 8  # the split point itself is random


def test_gather_exits_takes_each_steps_chosen_exit():
    features = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)  # (B, T, E, d)
    choice = torch.tensor([[0, 3, 1], [2, 2, 0]])
    out = gather_exits(features, choice)
    assert out.shape == (2, 3, 5)
    for b in range(2):
        for t in range(3):
            assert torch.equal(out[b, t], features[b, t, choice[b, t]])


# ------------------------------------------------------------------ losses
def test_action_loss_is_huber_plus_weighted_gripper_bce():
    pose = torch.tensor([[[0.5, -0.5, 0.0, 0.0, 0.0, 0.0]]])
    target = torch.tensor([[[0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 1.0]]])  # gripper open -> label 1
    logit = torch.tensor([[[0.3]]])
    out = HeadOutput(pose, logit, (torch.zeros(1), torch.zeros(1)))
    huber = (0.5 * 0.5 ** 2 + (2.5 - 0.5)) / 6  # |e| = 0.5 quadratic, |e| = 2.5 linear (delta 1)
    bce = -math.log(1 / (1 + math.exp(-0.3)))
    assert float(action_loss(out, target)) == pytest.approx(huber + 0.01 * bce, rel=1e-6)
    target[..., 6] = -1.0  # closed -> label 0
    bce0 = -math.log(1 - 1 / (1 + math.exp(-0.3)))
    assert float(action_loss(out, target)) == pytest.approx(huber + 0.01 * bce0, rel=1e-6)


def test_multi_exit_loss_sums_aux_heads_and_both_strategies(tiny_inputs):
    from deer_ros.model.deer import build_model

    config = tiny_inputs[0]
    torch.manual_seed(0)
    model = build_model(config)
    E = len(model.exit_layers)
    features = torch.randn(2, 5, E, config.d_model)
    target = torch.cat([torch.rand(2, 5, 6) * 2 - 1, torch.ones(2, 5, 1)], dim=-1)
    loss = multi_exit_loss(model.head, model.aux_heads, features, target, torch.Generator().manual_seed(0))
    assert set(loss.parts) == {f"aux{k}" for k in range(1, E + 1)} | {"shared1", "shared2"}
    assert float(loss.total.detach()) == pytest.approx(sum(loss.parts.values()), rel=1e-6)
    aux1 = action_loss(model.aux_heads[0](features[:, :, 0]), target)
    assert loss.parts["aux1"] == pytest.approx(float(aux1.detach()))
    no_aux = multi_exit_loss(model.head, None, features, target, torch.Generator().manual_seed(0))
    assert set(no_aux.parts) == {"shared1", "shared2"}
    with pytest.raises(ValueError, match="aux heads"):
        multi_exit_loss(model.head, model.aux_heads, features[:, :, :2], target)
