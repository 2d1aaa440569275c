"""Reading weight files: torch pickles (weights only), TorchScript archives, safetensors, Hugging Face folders."""
from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from deer_ros.model.checkpoint.errors import CheckpointError


def read_file(path: str | Path, trust_pickle: bool = False) -> dict[str, Any]:
    """A checkpoint file or Hugging Face model directory as a dict (tensors, and config values where present).

    torch files load with weights_only=True unless `trust_pickle` (only for files you trust: pickles run code).
    A deer_ros model folder reads as our single-file dict (format 'deer_ros'), so callers need not tell them apart.
    """
    path = Path(path)
    if path.is_dir():
        from deer_ros.model.checkpoint.folder import folder_as_own, is_model_folder

        return folder_as_own(path) if is_model_folder(path) else _read_hf_dir(path, trust_pickle)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if zipfile.is_zipfile(path) and any(n.endswith("constants.pkl") for n in zipfile.ZipFile(path).namelist()):
        with warnings.catch_warnings():  # deprecated in favour of torch.export, but OpenAI ships CLIP this way
            warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit.load.*")
            return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=not trust_pickle, mmap=zipfile.is_zipfile(path))
    except Exception as exc:  # noqa: BLE001 - report every unpickling failure the same way
        if trust_pickle:
            raise
        raise CheckpointError(str(path), hint=f"cannot be read with weights_only=True ({exc.__class__.__name__}: "
                                              f"{str(exc).splitlines()[0][:200]}). If you trust the file, load "
                                              "it with trust_pickle=True") from exc
    if not isinstance(data, dict):
        raise CheckpointError(str(path), hint=f"holds a {type(data).__name__}, not a dict of tensors")
    return data


def _read_hf_dir(path: Path, trust_pickle: bool) -> dict[str, Any]:
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = path / index_name
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            merged: dict[str, Any] = {}
            for shard in shards:
                merged.update(read_file(path / shard, trust_pickle))
            return merged
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (path / name).is_file():
            return read_file(path / name, trust_pickle)
    raise FileNotFoundError(f"{path} holds no model.safetensors, pytorch_model.bin or a sharded index of them")


def state_of(data: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint dict: its model_state_dict / state_dict if it has one, without `module.`."""
    for key in ("model_state_dict", "state_dict", "model"):
        if isinstance(data.get(key), dict):
            data = data[key]
            break
    tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    if tensors and all(k.startswith("module.") for k in tensors):  # DistributedDataParallel
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors
