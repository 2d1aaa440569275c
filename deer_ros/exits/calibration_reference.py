"""The reference's calibration protocol (deer-reference 2.4), as a calibration mode (`mode="reference"`).

For each chosen window of `window` consecutive frames inside an annotated segment:
  - both cameras are preprocessed as at inference, then randomly shifted (replicate padding of `pads` pixels,
    static then gripper, scaled from the 224-px CLIP input to the model's image size, integer offsets drawn
    per frame and camera in [1, 2p] with traj_cons as the released models, else [0, 2p]);
  - the LLM runs on all frames; each frame's history feature is the pooled feature of a uniformly random exit;
  - at every position s in window/2-1 .. window-2, the shared head runs from a zero LSTM state over the history
    features of frames 0..s-1 followed by frame s's feature at the layer before the first exit and at every
    exit; each exit's criterion compares its pose (and feature) with the previous entry's.
Windows: every start at which a window fits inside a segment, shuffled (seeded), the first `data_percent`.
One sample per (window, position): the values matrix has shape (n_exits, windows * positions).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import torch

from deer_ros.exits.calibration import Calibration, CalibrationError
from deer_ros.exits.criteria import CRITERIA, get_criterion
from deer_ros.exits.solver import SolverRule

REFERENCE_INPUT_SIZE = 224  # the shift pads are in pixels of the reference's 224-px input


@dataclass(frozen=True)
class ReferenceProtocol:
    window: int = 12
    data_percent: float = 0.1
    pads: tuple[int, int] = (10, 4)  # static, gripper ('aug_10_4' in the released file names)
    traj_cons: bool = True  # offsets in [1, 2p] (the released models' 'traj_cons'), else [0, 2p]
    seed: int = 0

    def __post_init__(self) -> None:
        if self.window < 3:
            raise ValueError(f"window must be >= 3 frames, got {self.window}")
        if not 0.0 < self.data_percent <= 1.0:
            raise ValueError(f"data_percent must be in (0, 1], got {self.data_percent}")

    @property
    def positions(self) -> range:
        return range(self.window // 2 - 1, self.window - 1)


def choose_windows(segment_lengths: Sequence[tuple[int, int]], protocol: ReferenceProtocol) -> list[tuple[int, int]]:
    """(segment index, start offset) of the windows to use, from (segment index, length) pairs."""
    starts = [(seg, off) for seg, length in segment_lengths for off in range(length - protocol.window + 1)]
    if not starts:
        raise CalibrationError(f"no segment is {protocol.window} frames long: the reference protocol needs windows "
                               "of that many frames (use mode 'segments' or a smaller window)")
    order = np.random.default_rng(protocol.seed).permutation(len(starts))
    keep = max(1, math.ceil(len(starts) * protocol.data_percent))
    return sorted(starts[i] for i in order[:keep])


def random_shift(images: torch.Tensor, pad: int, generator: torch.Generator, traj_cons: bool) -> torch.Tensor:
    """images (T, 3, S, S): each frame translated by an integer offset after replicate padding by `pad`."""
    if pad <= 0:
        return images
    T, _, S, _ = images.shape
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad), mode="replicate")
    low = 1 if traj_cons else 0
    offsets = torch.randint(low, 2 * pad + 1, (T, 2), generator=generator)
    return torch.stack([padded[t, :, y:y + S, x:x + S] for t, (x, y) in enumerate(offsets.tolist())])


class _Candidate:
    """What a criterion reads (the fields of policy.ExitCandidate)."""

    def __init__(self, pose, prev_pose, feature, prev_feature):
        self.pose, self.prev_pose, self.feature, self.prev_feature = pose, prev_pose, feature, prev_feature
        self.value = None


@torch.inference_mode()
def collect_reference_calibration(policy: Any, split: Any, protocol: ReferenceProtocol = ReferenceProtocol(),
                                  criteria: Sequence[str] | None = None, select: Any = None,
                                  meta: dict[str, Any] | None = None) -> Calibration:
    """Criterion values of `policy` (a DeerPolicy) on `split` (a CalvinSplit) by the reference's protocol."""
    from deer_ros.model.flops import exit_costs

    names = list(criteria or CRITERIA)
    fns = [get_criterion(n) for n in names]
    model, config = policy.model, policy.config
    exit_layers = model.exit_layers
    entries = [exit_layers[0] - 1] + list(exit_layers)  # the layer before the first exit, then every exit
    cols = [e + 1 for e in entries]  # forward_exit_features(include_embedding=True) puts the embedding at 0
    pads = [round(p * config.image_size / REFERENCE_INPUT_SIZE) for p in protocol.pads]
    segments = [s for s in split.segments(select)]
    for seg in segments:
        if not seg.instruction:
            raise CalibrationError(f"{split.path}: segment {seg.index} has no instruction; the policy needs one")
    by_index = {s.index: s for s in segments}
    windows = choose_windows([(s.index, len(s.frames)) for s in segments], protocol)
    gen = torch.Generator().manual_seed(protocol.seed)
    rows: list[np.ndarray] = []  # per sample: (n_exits, n_criteria)
    segment_of: list[int] = []
    scale: list[float] = []  # actual / typical prompt cost of each window
    costs = exit_costs(config, max_exit=len(exit_layers))
    loaded: dict[int, list] = {}
    for seg_index, start in windows:
        seg = by_index[seg_index]
        if seg_index not in loaded:
            loaded = {seg_index: [(f.rgb_static, f.rgb_gripper) for f in split.frames(seg, keys=())]}
        frames = loaded[seg_index][start:start + protocol.window]
        images = torch.cat([policy.preprocess(s, g) for s, g in frames])  # (T, C, 3, S, S)
        images = torch.stack([random_shift(images[:, c], pads[min(c, len(pads) - 1)], gen, protocol.traj_cons)
                              for c in range(images.shape[1])], dim=1)
        enc = policy.prompts([seg.instruction] * len(frames))
        dev = policy.device
        feats = model.forward_exit_features(images.to(dev, model.compute_dtype), enc.input_ids.to(dev),
                                            enc.media_locations.to(dev), enc.attention_mask.to(dev),
                                            include_embedding=True)[:, cols]  # (T, 1 + n_exits, d)
        pick = torch.randint(1, len(entries), (len(frames),), generator=gen)
        history = feats[torch.arange(len(frames)), pick.to(feats.device)]  # (T, d): a random exit per step
        n = len(entries)
        for s in protocol.positions:
            seq = torch.cat([history[:s].expand(n, s, -1), feats[s][:, None]], dim=1)  # (n, s + 1, d)
            pose = model.head(seq).pose[:, -1].float()  # (n, pose_dim), from a zero state
            f = feats[s].float()
            rows.append(np.array([[fn(_Candidate(pose[k], pose[k - 1], f[k], f[k - 1])) for fn in fns]
                                  for k in range(1, n)], dtype=np.float64))
            segment_of.append(seg_index)
        tokens = int(enc.attention_mask[0].sum())
        scale.append(exit_costs(config, tokens=tokens, max_exit=len(exit_layers))[-1].gflops / costs[-1].gflops)
    stacked = np.stack(rows, axis=-1)  # (n_exits, n_criteria, N)
    nominal = np.array([c.gflops for c in costs])
    info = {**(meta or {}), "mode": "reference", "protocol": asdict(protocol), "pads_px": pads,
            "windows": len(windows), "frames": len(rows), "segments": len(set(segment_of)),
            "solver": SolverRule.reference(config.name).to_dict(), "exit_gflops_nominal": nominal.tolist(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    return Calibration({name: stacked[:, i] for i, name in enumerate(names)}, nominal * float(np.mean(scale)),
                       [c.layers for c in costs], segment_of, info)


def cached_calibration(values: np.ndarray, config: Any, source: str) -> Calibration:
    """A calibration from the value matrix a DeeR eval run cached in its .pth (`values`: one row per exit, the
    RMS pose distance of the reference's protocol, i.e. our action_consistency)."""
    from deer_ros.model.flops import exit_costs

    costs = exit_costs(config)
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] != len(costs):
        raise CalibrationError(f"{source}: its cached 'values' have shape {values.shape}, expected "
                               f"({len(costs)}, N), one row per exit; calibrate with `deer-ros calibrate` instead")
    return Calibration({"action_consistency": values}, [c.gflops for c in costs], [c.layers for c in costs],
                       np.full(values.shape[1], -1), {"mode": "reference", "source": f"values cached in {source}",
                                                      "model": config.name,
                                                      "solver": SolverRule.reference(config.name).to_dict()})
