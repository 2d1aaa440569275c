"""LLM weight memory per `max_exit` and dtype, measured on built models, and the proportionality check.

For every max_exit k the model is built the way the node builds it (`DeerModel(config, max_exit=k)`: only the
layers up to exit k exist) and converted with `prepare_model` to each dtype (int8 = dynamic quantisation of
the LLM Linear layers). The measured figure counts the parameter and buffer bytes of the LLM modules
(embedding, MPT blocks, gated cross-attention; int8 packed weights included), next to the analytic figure from
the config (deer_ros.model.memory). The weights are left uninitialised (only their size matters here), except
that the LLM's are zeroed before int8 quantisation, whose observers must not see garbage such as NaN.

Proportionality (design target: memory at max_exit k proportional to the layers built, within 10%) is checked
on the layers' bytes: the token embedding is one fixed table whatever the depth, so it is reported beside them.
"""
from __future__ import annotations

import torch

from deer_ros.model.config import DeerConfig
from deer_ros.model.deer import build_model
from deer_ros.model.memory import llm_weight_bytes, memory_report, module_bytes
from deer_ros.model.precision import prepare_model

DTYPES = ("fp32", "fp16", "bf16", "int8")
MIB = 2 ** 20


def llm_memory(config: DeerConfig, dtypes: tuple[str, ...] = DTYPES) -> list[dict]:
    """One row per (max_exit, dtype): layers built, measured and analytic LLM MiB, embedding and layer MiB."""
    rows = []
    n_exits = len(config.exit_layers)
    for k in range(1, n_exits + 1):
        model = build_model(config, max_exit=k, empty=True)
        for dtype in sorted(dtypes, key=lambda d: d == "int8"):  # int8 replaces modules: convert to it last
            if dtype == "int8":
                with torch.no_grad():
                    for module in (model.blocks, model.xattn):
                        for p in module.parameters():
                            p.zero_()
            prepare_model(model, "cpu", dtype)
            measured = memory_report(model)["llm"] * MIB
            embedding = module_bytes(model.wte)
            rows.append({"max_exit": k, "layers": model.n_layers, "dtype": dtype,
                         "llm_mb": measured / MIB, "analytic_mb": llm_weight_bytes(config, model.n_layers, dtype) / MIB,
                         "embedding_mb": embedding / MIB, "layers_mb": (measured - embedding) / MIB})
        del model
    add_proportionality(rows)
    return rows


def add_proportionality(rows: list[dict]) -> None:
    """Per dtype: layers_mb(k) / layers_mb(last) against layers(k) / layers(last), and the relative error."""
    for dtype in {r["dtype"] for r in rows}:
        same = [r for r in rows if r["dtype"] == dtype]
        last = max(same, key=lambda r: r["layers"])
        for r in same:
            r["memory_ratio"] = r["layers_mb"] / last["layers_mb"]
            r["layer_ratio"] = r["layers"] / last["layers"]
            r["ratio_error"] = r["memory_ratio"] / r["layer_ratio"] - 1.0
            r["total_ratio"] = r["llm_mb"] / last["llm_mb"]  # with the embedding, for the record


def worst_ratio_error(rows: list[dict]) -> float:
    return max(abs(r["ratio_error"]) for r in rows)
