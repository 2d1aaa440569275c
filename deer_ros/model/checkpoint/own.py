"""Our single-file format (version 1, still read): {'format': 'deer_ros', 'version', 'config', 'built_exits',
'model_state_dict', ...extra}, names as in DeerModel.state_dict(). The model folder (folder.py) supersedes it
for shipping a model; training still writes these files (they carry optimizer state beside the weights)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from deer_ros.model.checkpoint.assemble import Mapped, load_state
from deer_ros.model.checkpoint.errors import CheckpointError
from deer_ros.model.config import DeerConfig
from deer_ros.model.deer import DeerModel, build_model

FORMAT = "deer_ros"
FORMAT_VERSION = 1


def unwrap(model_or_policy: Any) -> DeerModel:
    """The DeerModel of a DeerPolicy (or the model itself); refuses int8-quantised models, which cannot be saved."""
    model = getattr(model_or_policy, "model", model_or_policy)
    if any(hasattr(m, "_packed_params") for m in model.modules()):
        raise ValueError("cannot save an int8-quantised model: save the fp32 model, quantise when loading")
    return model


def save_checkpoint(model_or_policy: Any, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write our single-file format: {'format', 'version', 'config', 'built_exits', 'model_state_dict', **extra}."""
    model = unwrap(model_or_policy)
    reserved = {"format", "version", "config", "built_exits", "model_state_dict"}
    if extra and reserved & set(extra):
        raise ValueError(f"extra must not use the reserved keys {sorted(reserved & set(extra))}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"format": FORMAT, "version": FORMAT_VERSION, "config": model.config.to_dict(),
                "built_exits": len(model.exit_layers), "model_state_dict": state, **(extra or {})}, str(path))
    return path


def is_own_format(data: dict[str, Any]) -> bool:
    return data.get("format") == FORMAT


def load_own(data: dict[str, Any], max_exit: int | None = None, source: str = "checkpoint") -> DeerModel:
    """A DeerModel from a dict in our format; `max_exit` builds fewer layers than the file has."""
    if data.get("version") != FORMAT_VERSION:
        raise CheckpointError(source, hint=f"format version {data.get('version')!r} is not {FORMAT_VERSION}")
    return load_built(DeerConfig.from_dict(data["config"]), int(data.get("built_exits", 0)) or None,
                      Mapped(source, dict(data["model_state_dict"])), max_exit, source)


def load_built(config: DeerConfig, built: int | None, tensors: Mapped, max_exit: int | None,
               source: str) -> DeerModel:
    """A model of `config` from tensors saved from a model that built exits 1..`built` (None: all of them)."""
    built = built or len(config.exit_layers)
    if max_exit is not None and max_exit > built:
        raise ValueError(f"max_exit={max_exit} but {source} only has the layers of exits 1..{built}")
    model = build_model(config, max_exit if max_exit is not None else built, empty=True)
    load_state(model, [tensors])
    return model
