"""Checkpoints: the model folder we ship, our older single file, and the released DeeR/OpenFlamingo/MPT/CLIP files.

  errors.py     CheckpointError (missing / unexpected / mis-shaped keys, and which file supplies them)
  files.py      reading torch, TorchScript, safetensors files and Hugging Face folders
  layouts.py    the released layouts as data: rename rules per format (DEER_PTH, OPENFLAMINGO, HF_MPT, OPEN_CLIP)
  heads.py      reference action heads re-indexed onto ours (MLP modules by order)
  assemble.py   the one strict assembler every load goes through
  reference.py  config of a DeeR .pth, assembly in the reference's load order, export to the DeeR layout
  own.py        our single-file format (read and written; training uses it)
  folder.py     the model folder (config.json + model.safetensors + tokenizer/ + calibration.npz), fingerprints
The policy factory (load_policy) is deer_ros.model.factory.
"""
from __future__ import annotations

from deer_ros.model.checkpoint.assemble import Assembly, Mapped, assemble, load_state
from deer_ros.model.checkpoint.errors import CheckpointError
from deer_ros.model.checkpoint.files import read_file, state_of
from deer_ros.model.checkpoint.folder import (ModelFolder, checkpoint_fingerprint, is_model_folder, load_folder,
                                              open_folder, save_folder)
from deer_ros.model.checkpoint.heads import head_layout, remap_head
from deer_ros.model.checkpoint.layouts import (DEER_PTH, HF_MPT, OPEN_CLIP, OPENFLAMINGO, Layout, Rule,
                                               apply_layout)
from deer_ros.model.checkpoint.own import FORMAT, FORMAT_VERSION, is_own_format, load_own, save_checkpoint
from deer_ros.model.checkpoint.reference import (config_from_reference, export_reference_layout, load_reference,
                                                 reference_sources)

__all__ = ["Assembly", "CheckpointError", "DEER_PTH", "FORMAT", "FORMAT_VERSION", "HF_MPT", "Layout", "Mapped",
           "ModelFolder", "OPENFLAMINGO", "OPEN_CLIP", "Rule", "apply_layout", "assemble", "checkpoint_fingerprint",
           "config_from_reference", "export_reference_layout", "head_layout", "is_model_folder", "is_own_format",
           "load_folder", "load_own", "load_reference", "load_state", "open_folder", "read_file",
           "reference_sources", "remap_head", "save_checkpoint", "save_folder", "state_of", "map_open_clip",
           "map_hf_mpt"]


def map_open_clip(state: dict, source: str = "open_clip weights") -> Mapped:
    """CLIP (open_clip or OpenAI) weights under our names (the OPEN_CLIP rules)."""
    from deer_ros.model.config import DeerConfig

    return apply_layout(OPEN_CLIP, state, DeerConfig.preset("tiny"), source)


def map_hf_mpt(state: dict, config, source: str = "HF MPT weights") -> Mapped:
    """MosaicML / llm-foundry MPT weights under our names (the HF_MPT rules)."""
    return apply_layout(HF_MPT, state, config, source)
