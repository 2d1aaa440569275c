"""Analytic FLOPs against torch's FLOP counter, the paper's numbers, `deer-ros flops`, and weight memory."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from deer_ros.model import flops as F
from deer_ros.model.config import DeerConfig
from deer_ros.model.deer import build_model
from deer_ros.model.memory import (llm_params, llm_weight_bytes, max_exit_for_budget, memory_report, module_bytes)
from deer_ros.model.precision import prepare_model
from deer_ros.model.vision import patch_tokens
from model_fixtures import tiny_model


# Fused scaled-dot-product attention kernels that torch may dispatch to. Whether FlopCounterMode has a formula
# for each of them changes between releases (2.14.1 counts nothing for the CPU kernel, 2.15.0 does), so the
# counter is given one: the two batched products softmax(Q K^T) V, from the shapes the op is actually called with
# (B, H, L, E) x (B, H, S, E) x (B, H, S, Ev). Everything else is counted by torch's own formulas.
_SDPA_OPS = ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
             "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
             "_scaled_dot_product_fused_attention_overrideable")


def _attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    *batch, length, embed = query_shape
    sources, value_embed = key_shape[-2], value_shape[-1]
    heads = math.prod(batch)
    return 2 * heads * length * sources * embed + 2 * heads * length * sources * value_embed


ATTENTION_FORMULAS = {getattr(torch.ops.aten, name): _attention_flops
                      for name in _SDPA_OPS if hasattr(torch.ops.aten, name)}


def counted(fn) -> int:
    with FlopCounterMode(display=False, custom_mapping=ATTENTION_FORMULAS) as fc:
        fn()
    return fc.get_total_flops()


def test_attention_formula_counts_the_two_products():
    """The formula given to the counter, against the unfused computation that torch counts by itself."""
    q, k, v = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 7, 4), torch.randn(2, 3, 7, 6)
    fused = counted(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v))
    assert fused == counted(lambda: torch.softmax(q @ k.transpose(-1, -2) / 2.0, -1) @ v) > 0


@pytest.mark.parametrize("tokens", [1, 7, 11, 32])
def test_llm_layer_cost_matches_torch_flop_counter(tokens):
    model = tiny_model().requires_grad_(False)
    c = model.config
    x = torch.randn(2, tokens, c.d_model)
    media = torch.randn(2, 1, c.visual_tokens, c.vision_width)
    locations = torch.zeros(2, tokens, dtype=torch.bool)
    locations[:, 0] = True
    bias = model.attn_bias(tokens)
    for i in range(model.n_layers):  # torch counts FLOPs = 2 * MACs
        assert counted(lambda i=i: model.layer(i, x, media, locations, bias)) == 2 * 2 * F.layer_macs(c, i, tokens)


def test_layers_without_cross_attention_cost_only_the_block():
    c = DeerConfig.preset("tiny", xattn_every=2)
    assert F.layer_macs(c, 0, 9) == F.block_macs(c, 9) and F.layer_macs(c, 1, 9) > F.block_macs(c, 9)
    model = build_model(c).requires_grad_(False)
    x, media = torch.randn(1, 9, c.d_model), torch.randn(1, 1, c.visual_tokens, c.vision_width)
    loc = torch.ones(1, 9, dtype=torch.bool)
    for i in (0, 1):
        assert counted(lambda i=i: model.layer(i, x, media, loc, model.attn_bias(9))) == 2 * F.layer_macs(c, i, 9)


def test_vision_perceiver_and_head_costs_match_torch():
    model = tiny_model().requires_grad_(False)
    c = model.config
    images = torch.randn(2, 3, c.image_size, c.image_size)
    assert counted(lambda: patch_tokens(model.vision, images)) == 2 * 2 * F.vision_macs(c)
    tokens = torch.randn(2, 1, 1, c.vision_tokens, c.vision_width)
    assert counted(lambda: model.perceiver(tokens)) == 2 * 2 * F.perceiver_macs(c)
    # On the CPU the head runs torch's native LSTM kernel (not oneDNN, see head.py), which the counter sees as
    # matmuls: the LSTM and the MLPs together are counted. The LSTM count is also checked against its weights
    # (one multiply-accumulate per weight_ih / weight_hh element per step).
    head_macs = F.head_lstm_macs(c) + F.head_mlp_macs(c)
    assert counted(lambda: model.head.step(torch.randn(1, c.d_model), None)) == 2 * head_macs
    lstm_weights = sum(p.numel() for n, p in model.head.rnn.named_parameters() if "weight_" in n)
    assert F.head_lstm_macs(c) == lstm_weights


def test_of3b_reproduces_the_paper_per_layer_cost():
    """The paper: 31.2 GFLOPs (MACs) for the 24-layer LLM, ~1.3 per layer, at a typical CALVIN prompt."""
    c = DeerConfig.preset("of3b")
    assert c.typical_prompt_tokens == 14
    assert F.layer_macs(c, 0, 14) / 1e9 == pytest.approx(1.3, rel=0.10)
    assert F.llm_macs(c, 24, 14) / 1e9 == pytest.approx(31.2, rel=0.10)
    exits = F.exit_costs(c)
    assert [e.layers for e in exits] == [2, 4, 6, 8, 10, 12]
    paper = [2.6, 5.2, 7.8, 10.4, 13.0, 15.6]  # derived per-exit cumulative GFLOPs (reference section 7)
    for e, p in zip(exits, paper):
        assert e.gflops == pytest.approx(p, rel=0.10) and e.flops == 2 * e.macs
    # the vision encoder costs far more than the LLM per step: that is why the paper counts "LLM GFLOPs"
    assert F.vision_macs(c) / 1e9 == pytest.approx(81.0, rel=0.02)


def test_of9b_exits_and_cross_attention_placement():
    c = DeerConfig.preset("of9b")
    assert c.exit_layers == [1, 3, 5, 7, 9, 11, 13, 15]
    assert [i for i in range(16) if c.has_xattn(i)] == [3, 7, 11, 15]
    # a layer with cross-attention costs more than one without
    assert F.layer_macs(c, 3, 14) > F.layer_macs(c, 2, 14) == F.block_macs(c, 14)


def test_flops_cli_json(capsys):
    assert F.flops_main(["--model", "of3b", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [e["index"] for e in report["exits"]] == [1, 2, 3, 4, 5, 6]
    for e in report["exits"]:
        assert {"index", "layers", "gflops", "macs"} <= e.keys() and e["gflops"] == pytest.approx(e["macs"] / 1e9)
    assert report["full_llm"]["gflops"] == pytest.approx(31.2, rel=0.10)
    assert F.flops_main(["--model", "tiny", "--tokens", "20"]) == 0
    table = capsys.readouterr().out
    assert "20-token prompt" in table and "vision encoder" in table and "perceiver" in table
    with pytest.raises(SystemExit):
        F.flops_main(["--model", "of3b", "--tokens", "0"])
    with pytest.raises(SystemExit):
        F.flops_main(["--model", "gpt5"])


# ---------------------------------------------------------------------------- memory
@pytest.mark.parametrize("max_exit", [1, 2, 3])
def test_analytic_llm_memory_matches_the_built_model(max_exit):
    model = build_model(DeerConfig.preset("tiny"), max_exit)
    c = model.config
    measured = sum(module_bytes(m) for m in model.llm_modules())
    assert measured == llm_weight_bytes(c, c.layers_for_exit(max_exit), "fp32")
    params = llm_params(c, c.layers_for_exit(max_exit))
    linear = sum(m.weight.numel() for part in (model.blocks, model.xattn) for m in part.modules()
                 if isinstance(m, torch.nn.Linear))
    assert params.linear == linear


def test_memory_grows_with_the_layers_built_and_int8_shrinks_it():
    c = DeerConfig.preset("tiny")
    sizes = [memory_report(build_model(c, k))["llm"] for k in (1, 2, 3)]
    assert sizes[0] < sizes[1] < sizes[2]
    per_layer = llm_weight_bytes(c, 4) - llm_weight_bytes(c, 2)
    assert llm_weight_bytes(c, 6) - llm_weight_bytes(c, 4) == per_layer  # linear in the layer count
    quantised = prepare_model(build_model(c), "cpu", "int8")
    measured = sum(module_bytes(m) for m in quantised.llm_modules())
    assert measured == llm_weight_bytes(c, 6, "int8") < llm_weight_bytes(c, 6, "fp32")
    assert llm_weight_bytes(c, 6, "bf16") * 2 == llm_weight_bytes(c, 6, "fp32")


def test_memory_budget_picks_the_deepest_exit_that_fits():
    c = DeerConfig.preset("of3b")
    mb = [llm_weight_bytes(c, layer + 1) / 2 ** 20 for layer in c.exit_layers]
    assert max_exit_for_budget(c, mb[1]) == 2 and max_exit_for_budget(c, mb[1] - 1) == 1
    assert max_exit_for_budget(c, 1e9) == 6
    assert max_exit_for_budget(c, mb[3], "fp16") == 6  # half the bytes per weight
    with pytest.raises(ValueError, match="first exit alone needs"):
        max_exit_for_budget(c, 10)
