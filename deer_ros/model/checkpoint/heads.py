"""Reference action heads onto ours: LSTM names as they are, MLP modules by their order (reference 5.3).

The MLP Sequential index of each Linear/LayerNorm depends on the dropout_mode and layernorm flags of the run
that wrote the file; the order and the shapes do not, so heads are mapped ordinal to ordinal.
"""
from __future__ import annotations

import re
from typing import Any

import torch

from deer_ros.model.checkpoint.errors import CheckpointError
from deer_ros.model.config import DeerConfig


def head_layout(config: DeerConfig) -> dict[str, tuple[int, ...]]:
    """Our head's tensor names and shapes (built on the meta device: no memory, no init)."""
    from deer_ros.model.head import ActionHead

    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in ActionHead(config).state_dict().items()}


def mlp_groups(keys: dict[str, Any], prefix: str) -> list[tuple[int, str]]:
    """[(index, kind)] of the Linear ('linear') and LayerNorm ('norm') modules of an MLP Sequential, in order."""
    groups: dict[int, str] = {}
    for k, v in keys.items():
        m = re.fullmatch(re.escape(prefix) + r"\.(\d+)\.weight", k)
        if m:
            ndim = v.dim() if isinstance(v, torch.Tensor) else len(v)  # a tensor, or a shape tuple
            groups[int(m[1])] = "linear" if ndim == 2 else "norm"
    return sorted(groups.items())


def remap_head(src: dict[str, torch.Tensor], target: dict[str, tuple[int, ...]],
               source: str) -> dict[str, torch.Tensor]:
    """A reference head's tensors under our head's names."""
    out = {k: v for k, v in src.items() if not k.startswith(("actions.mlp.", "gripper.mlp."))}
    for mlp in ("actions.mlp", "gripper.mlp"):
        have, want = mlp_groups(src, mlp), mlp_groups(target, mlp)
        if [kind for _, kind in have] != [kind for _, kind in want]:
            raise CheckpointError(source, hint=f"{mlp} has modules {[k for _, k in have]} but the model expects "
                                               f"{[k for _, k in want]}: the head config (mlp_layernorm, number of "
                                               "hidden layers) does not match the file")
        for (i, _), (j, _) in zip(have, want):
            for param in ("weight", "bias"):
                if f"{mlp}.{i}.{param}" in src:
                    out[f"{mlp}.{j}.{param}"] = src[f"{mlp}.{i}.{param}"]
    return out
