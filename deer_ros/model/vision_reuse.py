"""Vision-token reuse: skip a camera's encoding when its image has barely changed since it was last encoded.

What is cached is one camera's media tokens, the perceiver's output for it ((1, 1, latents, dv)): the ViT and the
perceiver see each camera on its own (the perceiver is shared but applied per image), so one camera's tokens do not
depend on the other camera, and reusing them skips that camera's preprocessing, ViT and perceiver.

The change test, per camera, on the raw uint8 image (before any resize, so it costs microseconds):
  signature = luma (ITU-R BT.601: 0.299 R + 0.587 G + 0.114 B), block-averaged by an integer factor
              (shorter side // 32, the remainder cropped) to about 32 x 32 cells;
  change    = mean |signature - signature of the frame whose tokens are cached|, in grey levels (0..255);
              a different image size scores infinity (always re-encoded).
The tokens are reused when change <= threshold and they have been reused fewer than max_age steps in a row;
otherwise the camera is encoded and that frame becomes the new reference. Comparing with the last *encoded* frame,
not the previous one, makes a slow drift add up until it forces a re-encode, and max_age bounds how stale the
tokens can get even when the test is fooled (a small object moving in a large static scene changes few cells).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from deer_ros.model.preprocess import validate_rgb

SIGNATURE_CELLS = 32  # cells along the shorter side of the signature
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def signature(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (h, w) float32 block-mean luma, h = H // f, w = W // f, f = max(1, min(H, W) // 32)."""
    f = max(1, min(image.shape[0], image.shape[1]) // SIGNATURE_CELLS)
    h, w = image.shape[0] // f, image.shape[1] // f
    luma = image[: h * f, : w * f].astype(np.float32) @ _LUMA  # (h*f, w*f)
    return luma.reshape(h, f, w, f).mean(axis=(1, 3))


def change(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two signatures in grey levels; infinite when the image sizes differ."""
    if a.shape != b.shape:
        return math.inf
    return float(np.abs(a - b).mean())


@dataclass(frozen=True)
class CameraReuse:
    """Reuse settings of one camera. Either value 0 means: always encode this camera."""
    threshold: float = 0.0  # largest change (grey levels, 0..255) that still reuses the cached tokens
    max_age: int = 0  # most consecutive steps one encoding may be reused

    def __post_init__(self) -> None:
        if not (math.isfinite(self.threshold) and 0.0 <= self.threshold <= 255.0):
            raise ValueError(f"vision reuse threshold must be in [0, 255] grey levels, got {self.threshold}")
        if isinstance(self.max_age, bool) or not isinstance(self.max_age, int) or self.max_age < 0:
            raise ValueError(f"vision reuse max_age must be an integer >= 0 (steps), got {self.max_age!r}")

    @property
    def enabled(self) -> bool:
        return self.threshold > 0.0 and self.max_age > 0

    def describe(self) -> str:
        return f"change <= {self.threshold:g} for up to {self.max_age} steps" if self.enabled else "off"


OFF = CameraReuse()


@dataclass(frozen=True)
class VisionReuse:
    """Per-camera reuse settings in the model's camera order (static, gripper); missing cameras are off."""
    cameras: tuple[CameraReuse, ...] = ()

    def camera(self, i: int) -> CameraReuse:
        return self.cameras[i] if i < len(self.cameras) else OFF

    @property
    def enabled(self) -> bool:
        return any(c.enabled for c in self.cameras)

    def describe(self, names: tuple[str, ...]) -> str:
        if not self.enabled:
            return "off"
        return "; ".join(f"{name} {self.camera(i).describe()}" for i, name in enumerate(names))


@dataclass
class _Cached:
    signature: np.ndarray  # of the frame that was encoded
    tokens: torch.Tensor  # (1, 1, latents, dv)
    age: int = 0  # steps these tokens have been reused since they were encoded


@dataclass(frozen=True)
class CameraPlan:
    """What the cache decided for one camera this step."""
    reuse: bool
    change: float | None  # grey levels vs the cached frame; None when nothing was cached (or reuse is off)
    signature: np.ndarray | None  # this frame's signature (None when reuse is off for this camera)


class VisionCache:
    """The cached tokens of each camera and the reuse decisions; one per policy, cleared on reset/instruction."""

    def __init__(self, settings: VisionReuse | None = None) -> None:
        self.settings = settings or VisionReuse()
        self._cached: dict[int, _Cached] = {}

    def configure(self, settings: VisionReuse) -> None:
        self.settings = settings
        self.clear()

    def clear(self) -> None:
        self._cached.clear()

    def plan(self, images: tuple[np.ndarray, ...], names: tuple[str, ...]) -> list[CameraPlan]:
        """Decide per camera whether its cached tokens are reused this step (validating every image)."""
        plans = []
        for i, (image, name) in enumerate(zip(images, names)):
            settings = self.settings.camera(i)
            if not settings.enabled:
                plans.append(CameraPlan(False, None, None))
                continue
            sig = signature(validate_rgb(image, name))
            cached = self._cached.get(i)
            if cached is None:
                plans.append(CameraPlan(False, None, sig))
                continue
            delta = change(sig, cached.signature)
            plans.append(CameraPlan(delta <= settings.threshold and cached.age < settings.max_age, delta, sig))
        return plans

    def reused(self, i: int) -> torch.Tensor:
        """Camera i's cached tokens, one step older."""
        cached = self._cached[i]
        cached.age += 1
        return cached.tokens

    def store(self, i: int, plan: CameraPlan, tokens: torch.Tensor) -> None:
        """Keep camera i's freshly encoded tokens (only for cameras whose reuse is on)."""
        if plan.signature is not None:
            self._cached[i] = _Cached(plan.signature, tokens)
