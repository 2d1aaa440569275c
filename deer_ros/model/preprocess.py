"""Camera images -> CLIP-normalised tensors, both cameras of a step in one batch.

The reference runs every image through open_clip's *validation* transform (reference 1.2): PIL bicubic resize
of the shorter side, centre crop, RGB, to tensor, normalise with the OpenAI CLIP mean/std. We call that same
open_clip function on PIL images instead of re-implementing it: PIL's bicubic kernel differs from
torch.nn.functional.interpolate's, and the perceiver was trained on PIL-resized inputs.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from PIL import Image


def validate_rgb(image: np.ndarray, name: str) -> np.ndarray:
    """Check one camera image: a uint8 (H, W, 3) RGB array with H, W > 0. Returns it C-contiguous."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{name} must be a numpy array of shape (H, W, 3), got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8 RGB (0..255), got dtype {image.dtype}: convert it first")
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"{name} must have shape (H, W, 3) with H, W > 0, got {image.shape}")
    return np.ascontiguousarray(image)


class ImagePreprocessor:
    """Turns the cameras of one control step into a (1, n_cameras, 3, S, S) float32 tensor."""

    def __init__(self, image_size: int):
        from open_clip.transform import image_transform

        self.image_size = image_size
        self._transform: Callable[[Image.Image], torch.Tensor] = image_transform(image_size, is_train=False)

    def one(self, image: np.ndarray, name: str = "image") -> torch.Tensor:
        """(H, W, 3) uint8 -> (3, S, S) float32, CLIP-normalised."""
        return self._transform(Image.fromarray(validate_rgb(image, name)))

    def __call__(self, *cameras: np.ndarray, names: tuple[str, ...] = ("static_rgb", "gripper_rgb")) -> torch.Tensor:
        """Cameras in model order (static first) -> (1, n_cameras, 3, S, S)."""
        labels = names if len(names) == len(cameras) else tuple(f"camera {i}" for i in range(len(cameras)))
        return torch.stack([self.one(img, label) for img, label in zip(cameras, labels)]).unsqueeze(0)
