"""MPT decoder blocks (MosaicML MPT-1B / MPT-7B): pre-LN, ALiBi, optional q/k LayerNorm, no biases.

Parameter names follow MosaicML's `mosaic_gpt` block (as in the Hugging Face MPT-1B-RedPajama files) so those
weights load by name: ln_1, attn.Wqkv (fused q|k|v), attn.q_ln, attn.k_ln, attn.out_proj, ln_2, mlp.mlp_up,
mlp.mlp_down. transformers' own MPT has no q/k LayerNorm, so it cannot run MPT-1B (design.md section 1).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from deer_ros.model.config import DeerConfig


def alibi_slopes(n_heads: int, bias_max: int = 8) -> torch.Tensor:
    """Per-head ALiBi slopes, MosaicML's rule: 2^-(k * bias_max / n) for k = 1..n (n rounded up to 2^m)."""
    n = 2 ** math.ceil(math.log2(n_heads))
    slopes = 1.0 / torch.pow(2.0, torch.arange(1, n + 1, dtype=torch.float32) * (bias_max / n))
    if n != n_heads:  # interleave as MosaicML does for a head count that is not a power of two
        slopes = torch.cat([slopes[1::2], slopes[::2]])[:n_heads]
    return slopes  # (H,)


def causal_alibi_bias(n_heads: int, seq_len: int, bias_max: int, *, key_mask: torch.Tensor | None = None,
                      device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Additive attention bias (B or 1, H, L, L): -slope * (i - j) for keys j <= i, a large negative otherwise.

    MosaicML adds slope * (j - (L-1)) to every row; within a causal row that differs from -slope * (i - j) by a
    per-row constant, which softmax ignores. `key_mask` (B, L) bool masks right padding out of the keys.
    """
    pos = torch.arange(seq_len, device=device)
    distance = (pos[:, None] - pos[None, :]).to(torch.float32)  # (L, L) = i - j
    bias = -alibi_slopes(n_heads, bias_max).to(device)[:, None, None] * distance  # (H, L, L)
    blocked = (distance < 0)[None, None]  # (1, 1, L, L) future keys
    if key_mask is not None:
        blocked = blocked | ~key_mask[:, None, None, :].to(device)  # (B, 1, L, L)
    bias = bias[None].masked_fill(blocked, torch.finfo(torch.float32).min)  # (B|1, H, L, L)
    return bias.to(dtype)


class MPTAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, qk_ln: bool, eps: float):
        super().__init__()
        self.n_heads = n_heads
        self.Wqkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.q_ln = nn.LayerNorm(d_model, eps=eps, bias=False) if qk_ln else None
        self.k_ln = nn.LayerNorm(d_model, eps=eps, bias=False) if qk_ln else None
        self.out_proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = self.Wqkv(x).chunk(3, dim=-1)  # each (B, L, D)
        if self.q_ln is not None:  # q/k LayerNorm over the full width, before the head split (MosaicML)
            q, k = self.q_ln(q), self.k_ln(k)
        q, k, v = (t.view(B, L, self.n_heads, D // self.n_heads).transpose(1, 2) for t in (q, k, v))  # (B, H, L, hd)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias)  # scale 1/sqrt(hd), as MosaicML
        return self.out_proj(y.transpose(1, 2).reshape(B, L, D))


class MPTMLP(nn.Module):
    def __init__(self, d_model: int, ratio: int):
        super().__init__()
        self.mlp_up = nn.Linear(d_model, ratio * d_model, bias=False)
        self.mlp_act = nn.GELU(approximate="none")
        self.mlp_down = nn.Linear(ratio * d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp_down(self.mlp_act(self.mlp_up(x)))


class MPTBlock(nn.Module):
    """x += Attn(LN1(x)); x += MLP(LN2(x)). Dropouts are all 0 in MPT-1B/7B, so there are none."""

    def __init__(self, config: DeerConfig):
        super().__init__()
        d, eps = config.d_model, config.ln_eps
        self.ln_1 = nn.LayerNorm(d, eps=eps, bias=False)
        self.attn = MPTAttention(d, config.n_heads, config.qk_ln, eps)
        self.ln_2 = nn.LayerNorm(d, eps=eps, bias=False)
        self.mlp = MPTMLP(d, config.mlp_ratio)

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), attn_bias)  # (B, L, D)
        return x + self.mlp(self.ln_2(x))
