"""Analytic compute cost of a DeeR model, per LLM layer and per exit; `deer-ros flops`.

Convention: we count multiply-accumulates (MACs) of the matrix products (Linear layers, the attention score
and value products, the patch convolution). The DeeR paper reports "GFLOPs" that are in fact GMACs (the fvcore
convention): 1.3 G per MPT-1B layer with its cross-attention at a ~14-token CALVIN prompt (reference 2.5).
So every `gflops` value in deer_ros is GMACs / 1e9 (the paper's convention), and `flops` = 2 * MACs is given
beside it. Element-wise work (LayerNorm, softmax, GELU, residual adds) is not counted, as fvcore does not.
The attention products are counted over the full L x L score matrix, which is what is computed.

"LLM GFLOPs" (what exits and budgets are measured in) = the MPT blocks + their gated cross-attention. The
vision encoder (per camera), the perceiver (per camera) and one action-head call are reported beside it.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass

from deer_ros.model.config import PRESETS, DeerConfig


def block_macs(c: DeerConfig, tokens: int) -> int:
    """One MPT block on `tokens` text tokens: fused qkv, output projection, MLP, and the two attention products."""
    d, L = c.d_model, tokens
    linear = L * (3 * d * d + d * d + 2 * c.mlp_ratio * d * d)
    attention = 2 * L * L * d  # q.k^T and attn.v over all heads
    return linear + attention


def xattn_macs(c: DeerConfig, tokens: int) -> int:
    """One gated cross-attention block: text queries against all visual tokens, plus its feed-forward."""
    d, L, V, inner = c.d_model, tokens, c.visual_tokens, c.xattn_heads * c.xattn_dim_head
    per_text_token = d * inner + inner * d + 2 * c.xattn_ff_mult * d * d  # to_q, to_out, ff
    kv = V * c.vision_width * 2 * inner  # to_kv over the visual tokens, recomputed in every block
    attention = 2 * L * V * inner
    return L * per_text_token + kv + attention


def layer_macs(c: DeerConfig, layer: int, tokens: int) -> int:
    """LLM layer `layer` (0-based): its cross-attention (if it has one) and its MPT block."""
    return block_macs(c, tokens) + (xattn_macs(c, tokens) if c.has_xattn(layer) else 0)


def llm_macs(c: DeerConfig, layers: int, tokens: int) -> int:
    """Cumulative LLM MACs of running layers 0..layers-1."""
    return sum(layer_macs(c, i, tokens) for i in range(layers))


def vision_macs(c: DeerConfig) -> int:
    """CLIP ViT on one camera image: patch conv + every transformer block on P+1 tokens."""
    w, n = c.vision_width, c.vision_tokens + 1
    conv = c.vision_tokens * 3 * c.vision_patch ** 2 * w
    hidden = int(c.vision_mlp_ratio * w)
    per_block = n * (3 * w * w + w * w + 2 * w * hidden) + 2 * n * n * w
    return conv + c.vision_layers * per_block


def perceiver_macs(c: DeerConfig) -> int:
    """The perceiver on one camera: latents attend to (patch tokens + latents), then the feed-forward."""
    w, n, P, inner = c.vision_width, c.perceiver_latents, c.vision_tokens, c.perceiver_heads * c.perceiver_dim_head
    per_layer = (n * w * inner + (P + n) * w * 2 * inner + n * inner * w  # to_q, to_kv, to_out
                 + 2 * n * (P + n) * inner  # attention products
                 + n * 2 * c.perceiver_ff_mult * w * w)  # feed-forward
    return c.perceiver_depth * per_layer


def head_lstm_macs(c: DeerConfig) -> int:
    """The head's LSTM stack on one time step: 4 gates, input and recurrent products, per layer."""
    h = c.head_hidden
    return sum(4 * h * ((c.d_model if i == 0 else h) + h) for i in range(c.head_lstm_layers))


def head_mlp_macs(c: DeerConfig) -> int:
    """The pose and gripper MLPs on one time step."""
    dims = (c.head_hidden, *c.head_mlp_hidden)
    hidden = sum(a * b for a, b in zip(dims, dims[1:]))
    return 2 * hidden + dims[-1] * (c.pose_dim + 1)


def head_macs(c: DeerConfig) -> int:
    """One call of the action head on one time step."""
    return head_lstm_macs(c) + head_mlp_macs(c)


@dataclass(frozen=True)
class ExitCost:
    index: int  # 1-based exit
    layer: int  # 0-based layer feeding it
    layers: int  # LLM layers run when stopping here
    macs: int  # cumulative LLM MACs
    gflops: float  # macs / 1e9, the paper's convention
    flops: int  # 2 * macs


def exit_costs(c: DeerConfig, tokens: int | None = None, max_exit: int | None = None) -> list[ExitCost]:
    """Cumulative LLM cost at every exit (up to max_exit) for a prompt of `tokens` tokens (default: typical)."""
    L = c.typical_prompt_tokens if tokens is None else tokens
    exits = c.exit_layers[: max_exit] if max_exit else c.exit_layers
    out = []
    for k, layer in enumerate(exits, start=1):
        macs = llm_macs(c, layer + 1, L)
        out.append(ExitCost(k, layer, layer + 1, macs, macs / 1e9, 2 * macs))
    return out


def cost_report(c: DeerConfig, tokens: int | None = None) -> dict:
    """Everything `deer-ros flops` prints, as a JSON-ready dict."""
    from deer_ros.model.memory import llm_weight_bytes

    L = c.typical_prompt_tokens if tokens is None else tokens
    exits = []
    for e in exit_costs(c, L):
        row = asdict(e)
        row["llm_weight_mb"] = round(llm_weight_bytes(c, e.layers, "fp32") / 2 ** 20, 1)
        exits.append(row)
    full = llm_macs(c, c.n_layers, L)
    return {
        "model": c.name,
        "tokens": L,
        "convention": "gflops = GMACs (multiply-accumulates / 1e9), as the DeeR paper; flops = 2 * macs",
        "exits": exits,
        "per_layer_gflops": exits[-1]["gflops"] / exits[-1]["layers"],  # mean over the DeeR model's layers
        "full_llm": {"layers": c.n_layers, "macs": full, "gflops": full / 1e9},
        "vision_per_camera": {"macs": vision_macs(c), "gflops": vision_macs(c) / 1e9},
        "perceiver_per_camera": {"macs": perceiver_macs(c), "gflops": perceiver_macs(c) / 1e9},
        "head_per_call": {"macs": head_macs(c), "gflops": head_macs(c) / 1e9},
        "cameras": c.n_cameras,
    }


def format_report(r: dict) -> str:
    lines = [f"model {r['model']}: LLM cost per exit at a {r['tokens']}-token prompt ({r['convention']})", "",
             f"{'exit':>4} {'layer':>5} {'layers':>6} {'GFLOPs':>10} {'MACs':>15} {'FLOPs':>15} {'LLM MB fp32':>12}"]
    for e in r["exits"]:
        lines.append(f"{e['index']:>4} {e['layer']:>5} {e['layers']:>6} {e['gflops']:>10.4g} {e['macs']:>15,} "
                     f"{e['flops']:>15,} {e['llm_weight_mb']:>12.1f}")
    n = r["cameras"]
    lines += ["",
              f"per LLM layer (block + x-attn, mean): {r['per_layer_gflops']:.4g} GFLOPs",
              f"full LLM ({r['full_llm']['layers']} layers): {r['full_llm']['gflops']:.4g} GFLOPs",
              f"vision encoder: {r['vision_per_camera']['gflops']:.4g} GFLOPs per camera x {n}",
              f"perceiver: {r['perceiver_per_camera']['gflops']:.4g} GFLOPs per camera x {n}",
              f"action head: {r['head_per_call']['gflops']:.4g} GFLOPs per call"]
    return "\n".join(lines)


def flops_main(argv: list[str] | None) -> int:
    """`deer-ros flops`: per-exit LLM cost of a preset (a table, or JSON with --json)."""
    parser = argparse.ArgumentParser(prog="deer-ros flops", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="of3b", choices=sorted(PRESETS), help="model preset (default of3b)")
    parser.add_argument("--tokens", type=int, default=None,
                        help="prompt length in tokens (default: the preset's typical CALVIN prompt)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if args.tokens is not None and args.tokens <= 0:
        parser.error(f"--tokens must be a positive integer (got {args.tokens})")
    report = cost_report(DeerConfig.preset(args.model), args.tokens)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(flops_main(None))
