"""The converter against the real layouts: meta-device state dicts with exactly the keys and shapes of the
released DeeR, OpenFlamingo, MPT and CLIP files (data/manifests), at the real 3B and 9B sizes.

Every key of every file must be accounted for (mapped or known-unused, none unknown) and every tensor of the
model filled, without allocating the gigabytes.
"""
from __future__ import annotations

import pytest
import torch

from deer_ros.model.checkpoint import CheckpointError
from deer_ros.convert import convert
from deer_ros.model.deer import DeerModel
from manifests import meta_deer_pth, meta_state


def expected_keys(config) -> int:
    with torch.device("meta"):
        return len(DeerModel(config).state_dict())


def counts(result) -> dict[str, tuple[int, int, int, int]]:
    """source name -> (read, mapped, ignored, unknown)."""
    return {s.source: (s.read, len(s.tensors), len(s.ignored), len(s.unknown)) for s in result.sources}


def test_deer3b_with_clip_mpt1b_and_openflamingo_maps_every_key():
    result = convert(None, preset="of3b", deer=meta_deer_pth("deer3b_pth"),
                     vision_weights=meta_state("openclip_vitl14"),
                     mpt_weights=meta_state("mpt1b_hf"), openflamingo=meta_state("openflamingo3b_checkpoint"),
                     dry_run=True)
    assert counts(result) == {
        # 296 vision tensors; the text tower (150) unused
        "CLIP weights": (446, 296, 150, 0),
        # 24 blocks x 8 (12 of them skipped as not built); its 50432-row wte and ln_f unused
        "MPT weights": (194, 192, 2, 0),
        # perceiver 69 + wte 1 + x-attn of 24 layers x 11
        "OpenFlamingo checkpoint": (334, 334, 0, 0),
        # perceiver 69 + wte 1 + x-attn 12 x 11 (two aliases each) + blocks 12 x 8 + extra_exit 44; aux heads unused
        "DeeR checkpoint": (738, 69 + 1 + 132 + 96 + 44, 6 * 44, 0),
    }
    assert result.config.exit_layers == [1, 3, 5, 7, 9, 11] and result.config.head_mlp_dropout == 0.4
    assert len(result.assembly.tensors) == result.expected == expected_keys(result.config)
    assert len(result.assembly.skipped) == 12 * 8 + 12 * 11  # MPT and OpenFlamingo layers 12..23
    # later sources win, as in the reference's load order: the DeeR file provides what it has
    used = {s.source: p["used"] for s, p in zip(result.sources, result.assembly.per_source)}
    assert used == {"CLIP weights": 296, "MPT weights": 0, "OpenFlamingo checkpoint": 0, "DeeR checkpoint": 342}


def test_deer3b_needs_only_clip_besides_the_pth():
    result = convert(None, preset="of3b", deer=meta_deer_pth("deer3b_pth"),
                     vision_weights=meta_state("openclip_vitl14"),
                     dry_run=True)
    assert len(result.assembly.tensors) == result.expected
    with pytest.raises(CheckpointError, match=r"296 missing: vision\.") as err:
        convert(None, preset="of3b", deer=meta_deer_pth("deer3b_pth"), dry_run=True)
    assert "vision <- CLIP weights" in str(err.value)


def test_deer9b_with_clip_and_mpt7b_maps_every_key():
    result = convert(None, preset="of9b", deer=meta_deer_pth("deer9b_pth"),
                     vision_weights=meta_state("openclip_vitl14"),
                     mpt_weights=meta_state("mpt7b_hf"), dry_run=True)
    assert counts(result) == {
        "CLIP weights": (446, 296, 150, 0),
        # llm-foundry names (norm_1, ffn.up_proj, ...): 32 blocks x 6; wte (50432 rows) and norm_f unused
        "MPT weights": (194, 192, 2, 0),
        # perceiver 69 + wte 1 + x-attn at layers 3, 7, 11, 15 x 11 (two aliases) + blocks 16 x 6 + head 44
        "DeeR checkpoint": (650, 69 + 1 + 44 + 96 + 44, 8 * 44, 0),
    }
    c = result.config
    assert (c.d_model, c.xattn_every, c.qk_ln, c.exit_layers) == (4096, 4, False, [1, 3, 5, 7, 9, 11, 13, 15])
    assert len(result.assembly.tensors) == result.expected == expected_keys(c)


def test_deer9b_with_the_3b_preset_is_refused_with_the_reason():
    with pytest.raises(CheckpointError) as err:
        convert(None, preset="of3b", deer=meta_deer_pth("deer9b_pth"), vision_weights=meta_state("openclip_vitl14"),
                dry_run=True)
    assert "xattn.0.attn_gate" in err.value.missing  # of3b has x-attn before every layer; the 9B file at 3, 7, ..
    assert any(k.startswith("blocks.0.ln_1") or "q_ln" in k for k in err.value.missing)


def test_max_exit_skips_the_layers_not_built():
    result = convert(None, preset="of3b", deer=meta_deer_pth("deer3b_pth"),
                     vision_weights=meta_state("openclip_vitl14"),
                     max_exit=2, dry_run=True)
    assert len(result.assembly.tensors) == result.expected
    assert len(result.assembly.skipped) == 8 * (8 + 11)  # layers 4..11 of the DeeR file
