"""dtypes: fp32, fp16/bf16 (GPU dtypes, exercised here on the CPU), int8 dynamic quantisation of the LLM."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from deer_ros.model.memory import module_bytes
from deer_ros.model.policy import DeerPolicy, ExitDecision
from deer_ros.model.precision import prepare_model, resolve_device
from model_fixtures import tiny_model

INSTRUCTION = "open the drawer"


def run(policy: DeerPolicy, frames, exit_index: int) -> np.ndarray:
    policy.reset()
    decide = lambda c: ExitDecision(c.index == exit_index)  # noqa: E731
    return np.stack([policy.step(s, g, INSTRUCTION, decide).action for s, g in frames])


@pytest.mark.parametrize("dtype, tolerance", [("bf16", 0.1), ("fp16", 0.01), ("int8", 0.1)])
def test_reduced_precision_stays_close_to_fp32(tiny_tokenizer, frames, dtype, tolerance):
    reference = run(DeerPolicy(tiny_model(), tiny_tokenizer), frames[:4], 3)
    policy = DeerPolicy(tiny_model(), tiny_tokenizer, dtype=dtype)
    actions = run(policy, frames[:4], 3)
    pose_error = np.abs(actions[:, :6] - reference[:, :6]).max()
    assert 0 < pose_error < tolerance, f"{dtype}: max |pose - fp32 pose| = {pose_error}"
    # the gripper is a thresholded probability: it may only flip where fp32 was close to the threshold
    assert np.mean(actions[:, 6] == reference[:, 6]) >= 0.75


def test_fp16_and_bf16_cast_every_weight(tiny_tokenizer):
    for dtype, torch_dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        model = DeerPolicy(tiny_model(), tiny_tokenizer, dtype=dtype).model
        assert {p.dtype for p in model.parameters()} == {torch_dtype}


def test_int8_quantises_only_the_llm_linear_layers(tiny_tokenizer):
    fp32 = tiny_model()
    fp32_llm = sum(module_bytes(m) for m in fp32.llm_modules())
    model = DeerPolicy(tiny_model(), tiny_tokenizer, dtype="int8").model
    quantised = [m for m in model.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]
    plain_in_llm = [m for part in (model.blocks, model.xattn) for m in part.modules() if type(m) is nn.Linear]
    assert len(quantised) == 6 * (4 + 5) and not plain_in_llm  # 4 Linear per MPT block, 5 per x-attn block
    assert any(type(m) is nn.Linear for m in model.perceiver.modules())  # the rest stays fp32
    assert sum(module_bytes(m) for m in model.llm_modules()) < 0.6 * fp32_llm


def test_device_and_dtype_errors():
    with pytest.raises(ValueError, match="CPU only"):
        prepare_model(tiny_model(), "cuda", "int8")
    with pytest.raises(ValueError, match="unknown dtype"):
        prepare_model(tiny_model(), "cpu", "fp8")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu:0")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            resolve_device("cuda")
