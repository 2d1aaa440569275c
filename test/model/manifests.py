"""State dicts with exactly the keys and shapes of the released files, on the meta device (no memory).

Read from test/model/data/manifests (see its README): what the reference's own classes and save code produce.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import torch

MANIFESTS = Path(__file__).resolve().parent / "data" / "manifests"


def manifest(name: str) -> dict[str, Any]:
    with gzip.open(MANIFESTS / f"{name}.json.gz", "rt") as f:
        return json.load(f)


def meta_state(name: str) -> dict[str, torch.Tensor]:
    """{key: meta tensor of the manifest's shape and dtype}, in the file's order."""
    return {k: torch.empty(shape, dtype=getattr(torch, dtype), device="meta")
            for k, (shape, dtype) in manifest(name)["keys"].items()}


def meta_deer_pth(name: str) -> dict[str, Any]:
    """A DeeR .pth dict as torch.load returns it: the scalar config keys at the top level, model_state_dict."""
    top = {k: v for k, v in manifest(name)["top_level"].items() if not isinstance(v, (str, dict)) or k in
           ("head_type", "dropout_mode", "pooling", "precision")}
    return {**top, "model_state_dict": meta_state(name)}
