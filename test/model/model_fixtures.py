"""Helpers shared by the model tests (imported by name: test directories are not packages)."""
from __future__ import annotations

import torch

from deer_ros.model.config import DeerConfig


def open_gates(model, value: float = 0.7) -> None:
    """OpenFlamingo initialises the x-attn gates at 0 (images have no effect); open them so tests see the images."""
    with torch.no_grad():
        for i, blk in enumerate(model.xattn.values()):
            blk.attn_gate.fill_(value + 0.05 * i)
            blk.ff_gate.fill_(value - 0.05 * i)


def tiny_model(seed: int = 0, max_exit: int | None = None, **overrides):
    """A randomly initialised tiny model (seeded), gates open, in eval mode."""
    from deer_ros.model.deer import build_model

    torch.manual_seed(seed)
    model = build_model(DeerConfig.preset("tiny", **overrides), max_exit)
    open_gates(model)
    return model.eval()
