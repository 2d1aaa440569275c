"""The reference's calibration protocol (mode 'reference') on a tiny model and the real CALVIN sample."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from deer_ros.calvin.dataset import CalvinSplit
from deer_ros.exits.calibration import CalibrationError
from deer_ros.exits.calibration_reference import (ReferenceProtocol, choose_windows, collect_reference_calibration,
                                                  random_shift)
from deer_ros.model.config import DeerConfig
from deer_ros.model.decision import CONTINUE
from deer_ros.model.deer import build_model
from deer_ros.model.policy import DeerPolicy
from deer_ros.model.tokenizer import load_tokenizer
from deer_ros.paths import calvin_sample


@pytest.fixture(scope="module")
def policy():
    torch.manual_seed(0)
    config = DeerConfig.preset("tiny")
    model = build_model(config).eval()
    with torch.no_grad():  # open the gates so the images matter
        for blk in model.xattn.values():
            blk.attn_gate.fill_(0.7)
            blk.ff_gate.fill_(0.7)
    return DeerPolicy(model, load_tokenizer(config.tokenizer))


def test_windows_are_every_start_that_fits_then_a_seeded_share():
    # segments of 14 and 11 frames: 3 starts fit in the first (0, 1, 2), none in the second
    protocol = ReferenceProtocol(data_percent=1.0)
    assert choose_windows([(0, 14), (1, 11)], protocol) == [(0, 0), (0, 1), (0, 2)]
    some = ReferenceProtocol(data_percent=0.5, seed=1)
    assert len(choose_windows([(0, 14), (1, 20)], some)) == 6  # ceil(0.5 * (3 + 9))
    assert choose_windows([(0, 14), (1, 20)], some) == choose_windows([(0, 14), (1, 20)], some)
    with pytest.raises(CalibrationError, match="no segment is 12 frames long"):
        choose_windows([(0, 5)], protocol)


def test_random_shift_translates_by_whole_pixels_with_replicate_padding():
    img = torch.arange(16.0).view(1, 1, 4, 4).expand(50, 3, 4, 4)
    out = random_shift(img, 1, torch.Generator().manual_seed(0), traj_cons=False)
    assert out.shape == img.shape
    # every output is a 4x4 crop of the replicate-padded 6x6 image at an offset in [0, 2]
    padded = torch.nn.functional.pad(img[:1], (1, 1, 1, 1), mode="replicate")[0, 0]
    crops = {(y, x): padded[y:y + 4, x:x + 4] for y in range(3) for x in range(3)}
    seen = set()
    for frame in out:
        match = [k for k, c in crops.items() if torch.equal(frame[0], c)]
        assert len(match) == 1
        seen.add(match[0])
    assert (0, 0) in seen  # offset 0 is allowed without traj_cons ...
    out = random_shift(img, 1, torch.Generator().manual_seed(0), traj_cons=True)
    assert not any(torch.equal(frame[0], crops[(0, 0)]) or torch.equal(frame[0], crops[(0, 1)])
                   for frame in out)  # ... with traj_cons the offsets are in [1, 2]


def test_reference_collection_counts_positions_and_is_seeded(policy):
    split = CalvinSplit(calvin_sample() / "validation")
    protocol = ReferenceProtocol(data_percent=0.05, seed=0)
    a = collect_reference_calibration(policy, split, protocol, ["action_consistency"], select="0")
    assert a.n_exits == 3 and a.n_samples == a.meta["windows"] * 6  # positions 5..10
    assert a.meta["solver"] == {"counting": "floor", "skip_first_exit": False} and a.meta["pads_px"] == [3, 1]
    policy.step(np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64, 3), np.uint8), "go", lambda c: CONTINUE)
    b = collect_reference_calibration(policy, split, protocol, ["action_consistency"], select="0")
    np.testing.assert_array_equal(a.values["action_consistency"], b.values["action_consistency"])  # zero state
    c = collect_reference_calibration(policy, split, ReferenceProtocol(data_percent=0.05, seed=1),
                                      ["action_consistency"], select="0")
    assert not np.array_equal(a.values["action_consistency"], c.values["action_consistency"])


def test_without_augmentation_or_history_it_matches_a_policy_step_from_a_zero_state(policy):
    """Position s sees s history steps; with window 3 (positions 0 and 1) and no shift, position 0 has no history:
    its values are what the policy's own step computes from a zero state on that frame."""
    split = CalvinSplit(calvin_sample() / "validation")
    seg = split.segments("0")[0]
    protocol = ReferenceProtocol(window=3, data_percent=1.0, pads=(0, 0))
    assert list(protocol.positions) == [0, 1]
    cal = collect_reference_calibration(policy, split, protocol, ["action_consistency"], select="0")
    frames = list(split.frames(seg, keys=()))
    seen = []
    for f in frames[: len(frames) - 2]:
        policy.reset()
        rec = []
        policy.step(f.rgb_static, f.rgb_gripper, seg.instruction, lambda c, rec=rec: rec.append(
            float(torch.sqrt(torch.mean((c.pose - c.prev_pose) ** 2)))) or CONTINUE)
        seen.append(rec)
    np.testing.assert_allclose(cal.values["action_consistency"][:, 0::2], np.array(seen).T, rtol=1e-4, atol=1e-6)
