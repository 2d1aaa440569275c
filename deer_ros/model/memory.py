"""Weight memory: analytic (from a config, before building anything) and measured (from a built module).

"LLM weight memory" is what DeeR-S / DeeR-B cut by building fewer layers: the token embedding plus, per built
layer, the MPT block and its gated cross-attention. `memory_budget_mb` is a budget for exactly that; vision,
perceiver and head weights are the same for every exit and are reported separately.

int8 means dynamic quantisation of the LLM Linear weights (1 byte each, plus a per-tensor scale and zero
point); everything else stays fp32, as torch.ao.quantization.quantize_dynamic leaves it.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from deer_ros.model.config import DeerConfig

DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}
INT8_LINEAR_OVERHEAD = 16  # bytes per quantised Linear: fp64 scale + int64 zero point


@dataclass(frozen=True)
class ParamCount:
    linear: int  # weights of nn.Linear layers (what int8 quantises)
    other: int  # embeddings, LayerNorms, gates, biases
    n_linear: int  # number of nn.Linear modules

    def bytes(self, dtype: str) -> int:
        if dtype == "int8":
            return self.linear + self.n_linear * INT8_LINEAR_OVERHEAD + 4 * self.other
        return DTYPE_BYTES[check_dtype(dtype)] * (self.linear + self.other)

    def __add__(self, o: ParamCount) -> ParamCount:
        return ParamCount(self.linear + o.linear, self.other + o.other, self.n_linear + o.n_linear)


def check_dtype(dtype: str) -> str:
    if dtype not in (*DTYPE_BYTES, "int8"):
        raise ValueError(f"unknown dtype {dtype!r}; choose one of fp32, fp16, bf16, int8")
    return dtype


def layer_params(c: DeerConfig, layer: int) -> ParamCount:
    """Parameters of LLM layer `layer`: the MPT block (no biases) and, if present, its cross-attention."""
    d = c.d_model
    block = ParamCount(linear=4 * d * d + 2 * c.mlp_ratio * d * d,
                       other=2 * d + (2 * d if c.qk_ln else 0), n_linear=4)
    if not c.has_xattn(layer):
        return block
    inner = c.xattn_heads * c.xattn_dim_head
    xattn = ParamCount(linear=d * inner + c.vision_width * 2 * inner + inner * d + 2 * c.xattn_ff_mult * d * d,
                       other=2 * d + 2 * d + 2,  # attn.norm, ff LayerNorm (with biases), two gates
                       n_linear=5)
    return block + xattn


def llm_params(c: DeerConfig, layers: int) -> ParamCount:
    """Embedding plus layers 0..layers-1."""
    total = ParamCount(0, c.vocab_size * c.d_model, 0)
    for i in range(layers):
        total = total + layer_params(c, i)
    return total


def llm_weight_bytes(c: DeerConfig, layers: int, dtype: str = "fp32") -> int:
    return llm_params(c, layers).bytes(dtype)


def max_exit_for_budget(c: DeerConfig, budget_mb: float, dtype: str = "fp32") -> int:
    """The deepest exit whose LLM weights fit in `budget_mb` MiB; ValueError if not even the first one fits."""
    fits = [k for k, layer in enumerate(c.exit_layers, start=1)
            if llm_weight_bytes(c, layer + 1, dtype) <= budget_mb * 2 ** 20]
    if not fits:
        need = llm_weight_bytes(c, c.exit_layers[0] + 1, dtype) / 2 ** 20
        raise ValueError(f"memory_budget_mb={budget_mb} is too small for model '{c.name}' in {dtype}: the first "
                         f"exit alone needs {need:.1f} MB of LLM weights; raise the budget or use a smaller dtype")
    return fits[-1]


def module_bytes(module: nn.Module) -> int:
    """Measured weight bytes of a built module (parameters and buffers; int8 packed Linear weights included)."""
    total = sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))
    for m in module.modules():
        packed = getattr(m, "_packed_params", None)
        if packed is not None and hasattr(m, "weight") and callable(m.weight):  # dynamic-quantised Linear
            w = m.weight()
            total += w.numel() * w.element_size() + INT8_LINEAR_OVERHEAD
            b = m.bias()
            total += 0 if b is None else b.numel() * b.element_size()
    return total


def memory_report(model: nn.Module) -> dict[str, float]:
    """Measured weight MiB of a DeerModel by part."""
    parts = {"llm": model.llm_modules(), "vision": [model.vision], "perceiver": [model.perceiver],
             "head": [model.head] + ([model.aux_heads] if model.aux_heads is not None else [])}
    report = {name: sum(module_bytes(m) for m in mods) / 2 ** 20 for name, mods in parts.items()}
    report["total"] = sum(report.values())
    return report

