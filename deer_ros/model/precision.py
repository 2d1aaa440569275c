"""Devices and dtypes: fp32 anywhere; fp16/bf16 (meant for GPUs); int8 dynamic quantisation on the CPU.

int8 quantises only the LLM's Linear layers (MPT blocks and gated cross-attention) with
torch.ao.quantization.quantize_dynamic: weights int8 per tensor, activations quantised on the fly. The vision
tower, perceiver, embedding and head stay fp32 (they are either small or not the part exits save).
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

from deer_ros.model.memory import check_dtype

TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "int8": torch.float32}


def resolve_device(device: str | torch.device) -> torch.device:
    """'cpu', 'cuda' or 'cuda:N' as a torch.device; a clear error when CUDA is asked for but absent."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}; use 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available on this machine; use 'cpu'")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r}; use 'cpu', 'cuda' or 'cuda:N'")
    return dev


def prepare_model(model: nn.Module, device: str | torch.device = "cpu", dtype: str = "fp32") -> nn.Module:
    """Move a DeerModel to `device` in `dtype`, in eval mode (in place; returns it)."""
    check_dtype(dtype)
    if dtype == "int8" and str(device) != "cpu":
        raise ValueError(f"dtype int8 (dynamic quantisation) runs on the CPU only (device {device!r} given); "
                         "use fp16 or bf16 on a GPU")
    dev = resolve_device(device)
    model.eval()
    if dtype == "int8":
        model.to(device=dev, dtype=torch.float32)
        with warnings.catch_warnings():
            # torch deprecates the quantized-tensor API in favour of torchao; it still works, and torchao is not
            # a dependency of this project.
            warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.ao")
            warnings.filterwarnings("ignore", message=r".*deprecated.*", category=UserWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            for part in (model.blocks, model.xattn):
                torch.ao.quantization.quantize_dynamic(part, {nn.Linear}, dtype=torch.qint8, inplace=True)
        return model
    return model.to(device=dev, dtype=TORCH_DTYPES[dtype])
