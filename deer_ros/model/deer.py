"""DeerModel: the DeeR multi-exit VLA network (RoboFlamingo/OpenFlamingo with exits), run layer by layer.

    cameras (B, C, 3, S, S) --CLIP ViT--> (B*C, P, dv) patch tokens --shared perceiver--> (B*C, 1, n, dv)
        --concat cameras, static first--> media (B, 1, C*n, dv)
    prompt ids (B, L) --wte--> x (B, L, d)
    for each built layer i:  x = gated_xattn_i(x, media) (if layer i has one);  x = mpt_block_i(x)
    exit at layer i:  feature = max over L of x (no final LayerNorm)  --shared LSTM head--> pose, gripper

Only LLM layers 0..(last exit allowed) are built, so `max_exit` also cuts memory (DeeR-S / DeeR-B). The perceiver
and the gated cross-attention are open_flamingo's own modules and the vision tower is open_clip's, so released
weights load by name (checkpoint.py). The step-by-step control API is in policy.py; `forward_exit_features`
is the batched path for training and calibration.
"""
from __future__ import annotations

import torch
from torch import nn

from deer_ros.dependencies import require
from deer_ros.model.config import DeerConfig
from deer_ros.model.head import ActionHead
from deer_ros.model.mpt import MPTBlock, causal_alibi_bias
from deer_ros.model.vision import build_vision_tower, patch_tokens


class DeerModel(nn.Module):
    def __init__(self, config: DeerConfig, max_exit: int | None = None):
        super().__init__()
        helpers = require("open_flamingo.src.helpers", "the DeeR model (perceiver, gated cross-attention)")
        GatedCrossAttentionBlock, PerceiverResampler = helpers.GatedCrossAttentionBlock, helpers.PerceiverResampler

        c = self.config = config
        self.max_exit = max_exit
        self.n_layers = c.layers_for_exit(max_exit)  # LLM layers built
        self.vision = build_vision_tower(c)
        self.vision.requires_grad_(False)  # frozen CLIP, as in the reference
        self.perceiver = PerceiverResampler(dim=c.vision_width, depth=c.perceiver_depth, dim_head=c.perceiver_dim_head,
                                            heads=c.perceiver_heads, num_latents=c.perceiver_latents,
                                            ff_mult=c.perceiver_ff_mult)
        self.wte = nn.Embedding(c.vocab_size, c.d_model)
        self.blocks = nn.ModuleList([MPTBlock(c) for _ in range(self.n_layers)])
        self.xattn = nn.ModuleDict({
            str(i): GatedCrossAttentionBlock(dim=c.d_model, dim_visual=c.vision_width, dim_head=c.xattn_dim_head,
                                             heads=c.xattn_heads, ff_mult=c.xattn_ff_mult,
                                             only_attend_immediate_media=True)
            for i in range(self.n_layers) if c.has_xattn(i)})
        self.head = ActionHead(c)
        self.aux_heads = nn.ModuleList([ActionHead(c) for _ in self.exit_layers]) if c.aux_heads else None

    # ------------------------------------------------------------------ structure
    @property
    def exit_layers(self) -> list[int]:
        """0-based layers of the built exits, in order."""
        return self.config.exit_layers[: len([e for e in self.config.exit_layers if e < self.n_layers])]

    def llm_modules(self) -> list[nn.Module]:
        """The LLM parts whose weights count as "LLM memory": embedding, blocks, gated cross-attention."""
        return [self.wte, self.blocks, self.xattn]

    # ------------------------------------------------------------------ pieces of the forward pass
    def encode_vision(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, C, 3, S, S) normalised -> media (B, 1, C * latents, dv), cameras in input order."""
        B, C = images.shape[:2]
        # The tower is frozen (no graph kept) unless a training recipe unfroze it: the tiny model trains from scratch.
        trainable = torch.is_grad_enabled() and any(p.requires_grad for p in self.vision.parameters())
        with torch.set_grad_enabled(trainable):
            tokens = patch_tokens(self.vision, images.flatten(0, 1))  # (B*C, P, dv)
        latents = self.perceiver(tokens[:, None, None])  # (B*C, 1, n, dv): one shared perceiver for all cameras
        n, dv = latents.shape[-2:]
        return latents.view(B, C * n, dv)[:, None]  # (B, 1, C*n, dv)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.wte(input_ids)  # (B, L, d); ALiBi, so no positional embedding

    def attn_bias(self, seq_len: int, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Causal ALiBi bias for the self-attention of every layer, (B|1, H, L, L)."""
        return causal_alibi_bias(self.config.n_heads, seq_len, self.config.alibi_bias_max, key_mask=key_mask,
                                 device=self.wte.weight.device, dtype=self.compute_dtype)

    @property
    def compute_dtype(self) -> torch.dtype:
        return self.wte.weight.dtype

    def layer(self, i: int, x: torch.Tensor, media: torch.Tensor, media_locations: torch.Tensor,
              attn_bias: torch.Tensor) -> torch.Tensor:
        """LLM layer i: gated cross-attention to the media (if layer i has one), then the MPT block."""
        xattn = self.xattn[str(i)] if str(i) in self.xattn else None
        if xattn is not None:
            x = xattn(x, media, media_locations=media_locations)  # (B, L, d)
        return self.blocks[i](x, attn_bias)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """Exit feature: (B, L, d) -> (B, d), over all positions (pads included, as the reference)."""
        return x.amax(dim=1) if self.config.pooling == "max" else x.mean(dim=1)

    # ------------------------------------------------------------------ batched path (training, calibration)
    def forward_exit_features(self, images: torch.Tensor, input_ids: torch.Tensor, media_locations: torch.Tensor,
                              attention_mask: torch.Tensor | None = None,
                              include_embedding: bool = False) -> torch.Tensor:
        """Pooled features of every built layer: (B, n_layers, d), [:, i] = output of layer i.

        images (B, C, 3, S, S); input_ids, media_locations (True at <image>) and attention_mask (False on right
        padding) are (B, L), as in tokenizer.EncodedPrompt. With include_embedding the result is
        (B, 1 + n_layers, d) and [:, 0] is the pooled embedding (the "layer before" a first exit at layer 0).
        """
        media = self.encode_vision(images.to(self.compute_dtype))
        x = self.embed(input_ids)
        key_mask = None if attention_mask is None else attention_mask.bool()
        bias = self.attn_bias(input_ids.shape[1], key_mask)
        feats = [self.pool(x)] if include_embedding else []
        for i in range(self.n_layers):
            x = self.layer(i, x, media, media_locations, bias)
            feats.append(self.pool(x))
        return torch.stack(feats, dim=1)


def build_model(config: DeerConfig, max_exit: int | None = None, *, empty: bool = False) -> DeerModel:
    """A DeerModel on the CPU. `empty=True` skips random initialisation (every tensor must then be loaded)."""
    if not empty:
        return DeerModel(config, max_exit)
    with torch.device("meta"):
        model = DeerModel(config, max_exit)
    return model.to_empty(device="cpu")

