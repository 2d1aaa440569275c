"""Training data: 12-step windows of CALVIN-format segments, as the model sees them (reference 4.4).

Every start index inside each language-annotated segment gives one window (`training_windows`, skip 1); the
labels are the frames' `rel_actions`. Images go through the model's own preprocessing (open_clip's validation
transform to the preset's image size, CLIP-normalised) once, when the split is loaded, and are kept in memory:
the random shift then runs on the normalised tensors, as the reference's does. The instruction of a window is
its segment's annotation, tokenised into the DeeR prompt by the model's tokenizer.

Memory: the preprocessed frames of the chosen segments stay in RAM (N x cameras x 3 x S x S float32; 4 MB per
100 frames for `tiny`, 120 MB per 100 frames at 224 px). Select segments to train on a subset of a big split.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from deer_ros.calvin.dataset import CalvinDatasetError, CalvinSplit, Segment, training_windows
from deer_ros.model.preprocess import ImagePreprocessor
from deer_ros.model.tokenizer import EncodedPrompt, PromptEncoder

log = logging.getLogger(__name__)

WINDOW = 12  # time steps per training window (reference: window_size 12)
REFERENCE_SHIFT_PADS = (10, 4)  # random-shift pads of the static and gripper cameras at 224 px ("aug_10_4")
REFERENCE_IMAGE_SIZE = 224


def scaled_shift_pads(image_size: int) -> tuple[int, int]:
    """The reference's (10, 4) pixel pads scaled to `image_size`, so the shift is the same fraction of the image."""
    return tuple(max(1, round(p * image_size / REFERENCE_IMAGE_SIZE)) for p in REFERENCE_SHIFT_PADS)  # type: ignore


def random_shift(images: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Replicate-pad each image by `pad` and crop it back at a random integer offset in [0, 2 * pad].

    images (N, 3, S, S) -> (N, 3, S, S). Each image gets its own offset (the reference's `traj_cons` shift is
    per frame too). An integer translation of the padded image is exactly this crop, so no interpolation is done.
    """
    if pad <= 0:
        return images
    N, _, H, W = images.shape
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")  # (N, 3, H + 2p, W + 2p)
    dy, dx = torch.randint(0, 2 * pad + 1, (2, N), generator=generator)  # (N,) each
    rows = (dy[:, None] + torch.arange(H))[:, :, None]  # (N, H, 1)
    cols = (dx[:, None] + torch.arange(W))[:, None, :]  # (N, 1, W)
    out = padded[torch.arange(N)[:, None, None], :, rows, cols]  # (N, H, W, 3): advanced indices first
    return out.permute(0, 3, 1, 2).contiguous()


@dataclass
class Batch:
    """B windows of T steps. The prompt is per window: every step of a window has the same instruction."""

    images: torch.Tensor  # (B, T, C, 3, S, S) CLIP-normalised, cameras static first
    prompt: EncodedPrompt  # (B, L) ids / masks, right-padded to the batch's longest prompt
    actions: torch.Tensor  # (B, T, 7) rel_actions: 6 pose values in [-1, 1], gripper +1 open / -1 close

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.actions.shape[:2])  # type: ignore[return-value]

    def to(self, device: torch.device | str) -> "Batch":
        p = self.prompt
        prompt = EncodedPrompt(p.input_ids.to(device), p.attention_mask.to(device), p.media_locations.to(device))
        return Batch(self.images.to(device), prompt, self.actions.to(device))


class WindowDataset:
    """The training windows of some segments of a CALVIN split, with their frames preprocessed in memory."""

    def __init__(self, split: CalvinSplit, segments: Sequence[Segment], preprocess: ImagePreprocessor,
                 prompts: PromptEncoder, window: int = WINDOW, shift_pads: tuple[int, int] | None = None):
        if not segments:
            raise CalvinDatasetError(f"{split.path}: no segments selected to train on")
        unannotated = [s.index for s in segments if not s.instruction.strip()]
        if unannotated:
            raise CalvinDatasetError(
                f"{split.path}: segments {unannotated[:5]} have no instruction; training needs language "
                "annotations (lang_annotations/auto_lang_ann.npy), see the CALVIN dataset layout")
        self.window = window
        self.windows = training_windows(segments, window)  # (segment, start frame)
        if not self.windows:
            longest = max(len(s) for s in segments)
            raise CalvinDatasetError(f"{split.path}: no segment is {window} frames long (longest: {longest}); "
                                     "lower the window or add longer segments")
        self.prompts = prompts
        self.shift_pads = scaled_shift_pads(preprocess.image_size) if shift_pads is None else tuple(shift_pads)
        frame_ids = sorted({i for s in segments for i in s.frames})
        self._row = {frame: row for row, frame in enumerate(frame_ids)}
        images, actions = [], []
        for frame_id in frame_ids:
            f = split.frame(frame_id, keys=())
            images.append(torch.stack([preprocess.one(f.rgb_static, "rgb_static"),
                                       preprocess.one(f.rgb_gripper, "rgb_gripper")]))  # (C, 3, S, S)
            actions.append(torch.from_numpy(np.asarray(f.rel_actions, dtype=np.float32)))
        self.images = torch.stack(images)  # (N, C, 3, S, S)
        self.actions = torch.stack(actions)  # (N, 7)
        log.info("loaded %d frames (%d windows of %d) from %s", len(frame_ids), len(self.windows), window,
                 split.path)

    def __len__(self) -> int:
        return len(self.windows)

    @property
    def n_frames(self) -> int:
        return len(self.images)

    def batch(self, indices: Sequence[int], augment: bool = False,
              generator: torch.Generator | None = None) -> Batch:
        """The windows at `indices` as one Batch; `augment` applies the random shift (static, gripper pads)."""
        rows = torch.tensor([[self._row[start + t] for t in range(self.window)]
                             for _, start in (self.windows[i] for i in indices)])  # (B, T)
        images = self.images[rows]  # (B, T, C, 3, S, S)
        if augment:
            B, T, C = images.shape[:3]
            shifted = [random_shift(images[:, :, c].flatten(0, 1), self.shift_pads[min(c, 1)], generator)
                       for c in range(C)]  # per camera: (B*T, 3, S, S)
            images = torch.stack(shifted, dim=1).view_as(images)
        prompt = self.prompts([self.windows[i][0].instruction for i in indices])
        return Batch(images, prompt, self.actions[rows])
