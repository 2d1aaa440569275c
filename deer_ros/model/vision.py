"""The vision encoder: open_clip's VisionTransformer, read out as pre-ln_post patch tokens.

The released perceiver was trained on open_clip 2.20's `output_tokens` output: the last transformer block's
patch tokens (CLS dropped) *without* ln_post, which 2.20 applied only to the pooled CLS token. Later open_clip
versions may normalise all tokens first (reference 1.2 pitfall). `patch_tokens` therefore runs the tower's own
submodules itself (conv1, class/positional embedding, ln_pre, transformer) and stops there, so any open_clip
version gives the tokens 2.20 gave. ln_post and proj stay in the module, unused, so CLIP weights load by name.
"""
from __future__ import annotations

import torch
from torch import nn

from deer_ros.model.config import DeerConfig


def build_vision_tower(config: DeerConfig) -> nn.Module:
    """An open_clip VisionTransformer with the config's sizes (ViT-L/14 for the real presets)."""
    from open_clip.model import CLIPVisionCfg, _build_vision_tower

    cfg = CLIPVisionCfg(layers=config.vision_layers, width=config.vision_width, head_width=config.vision_head_width,
                        mlp_ratio=config.vision_mlp_ratio, patch_size=config.vision_patch,
                        image_size=config.image_size)
    # _build_vision_tower is what open_clip.create_model itself uses, so the module (QuickGELU for OpenAI
    # weights, open_clip's LayerNorm) is the one the reference ran.
    return _build_vision_tower(config.vision_output_dim, cfg, quick_gelu=config.vision_quick_gelu)


def patch_tokens(visual: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(N, 3, S, S) normalised images -> (N, P, width) patch tokens before ln_post (CLS excluded)."""
    x = visual.conv1(images)  # (N, width, g, g)
    x = x.flatten(2).transpose(1, 2)  # (N, P, width)
    cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)  # (N, 1, width)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)  # (N, P+1, width)
    x = visual.ln_pre(x)
    if getattr(visual.transformer, "batch_first", False):  # newer open_clip: (N, L, D) transformer
        x = visual.transformer(x)
    else:  # open_clip <= 2.2x: sequence-first
        x = visual.transformer(x.transpose(0, 1)).transpose(0, 1)
    return x[:, 1:]  # (N, P, width)
