"""Measured before/after of what deer_ros does beyond the reference to cut the whole step, not only the LLM.

Each gain is measured on the same policy, the "before" and "after" variants interleaved step by step so that
load from other processes falls on both alike:
  cameras_batched   both cameras in one ViT + perceiver pass (after) vs one pass per camera (before, as the
                    reference's per-camera `_encode_vision` loop); the outputs are checked to be equal
  prompt_reused     the instruction's tokens, ALiBi bias and per-layer costs cached while it stays the same
                    (after) vs re-tokenised at every step (before, as the reference does); measured on the
                    step's time outside the model's modules, where that work happens
  head_state_kept   the chosen exit's LSTM state is kept from its decode (after) vs the reference's extra head
                    call on the chosen feature to produce it (before): one head call per step
  int8_llm          CPU only: the LLM's Linear layers in dynamic int8 (after) vs fp32 (before), every layer run
  early_exit        DeeR itself, for scale: exit 1 vs the last exit, whole step
Stage times come from timing.StageTimer (forward hooks), so they are the real step's stages.
"""
from __future__ import annotations

import time
from collections import defaultdict
from typing import Callable, Sequence

import torch

from deer_ros.bench.timing import BenchFrame, StageTimer, frame_stream, summarize, synchronizer
from deer_ros.exits.controller import FixedExit
from deer_ros.model.policy import DeerPolicy, ExitDecider


def gain(name: str, what: str, scope: str, before_ms: float, after_ms: float, steps: int) -> dict:
    """One before/after line (p50 times): the saving in ms and as a share of `before`."""
    return {"name": name, "what": what, "scope": scope, "before_ms_p50": before_ms, "after_ms_p50": after_ms,
            "saving_ms": before_ms - after_ms, "saving_share": (before_ms - after_ms) / before_ms, "steps": steps}


def measured_gain(name: str, what: str, scope: str, before: Sequence[float], after: Sequence[float]) -> dict:
    b, a = summarize(before), summarize(after)
    return gain(name, what, scope, b["p50"], a["p50"], a["n"])


def _interleaved(before: Callable[[int], None], after: Callable[[int], None], steps: int, warmup: int,
                 sync: Callable[[], None]) -> tuple[list[float], list[float]]:
    """Run before(s) and after(s) alternately; return their times (ms) after the warm-up."""
    times: dict[str, list[float]] = defaultdict(list)
    for s in range(warmup + steps):
        for name, fn in (("before", before), ("after", after)):
            sync()
            t0 = time.perf_counter()
            fn(s)
            sync()
            if s >= warmup:
                times[name].append((time.perf_counter() - t0) * 1e3)
    return times["before"], times["after"]


def cameras_batched(policy: DeerPolicy, frames: Sequence[BenchFrame], steps: int, warmup: int) -> dict:
    """ViT + perceiver on both cameras: one batched pass vs one pass per camera."""
    model = policy.model
    images = [policy.preprocess(f.static, f.gripper).to(policy.device, model.compute_dtype)
              for f in frames[: max(1, min(len(frames), steps))]]  # (1, C, 3, S, S) each

    def per_camera(s: int) -> torch.Tensor:
        x = images[s % len(images)]
        return torch.cat([model.encode_vision(x[:, c:c + 1]) for c in range(x.shape[1])], dim=2)

    def batched(s: int) -> torch.Tensor:
        return model.encode_vision(images[s % len(images)])  # (1, 1, C*n, dv)

    with torch.inference_mode():
        a, b = per_camera(0).float(), batched(0).float()
        tol = 1e-4 if model.compute_dtype == torch.float32 else 2e-2  # relative; half types round differently
        if a.shape != b.shape or float((a - b).norm() / b.norm().clamp_min(1e-12)) > tol:
            raise RuntimeError("batched and per-camera vision passes disagree: the comparison would be invalid")
        before, after = _interleaved(per_camera, batched, steps, warmup, synchronizer(policy.device))
    return measured_gain("cameras_batched", "both cameras in one vision pass (ViT + perceiver)",
                         "vision + perceiver", before, after)


def _stage_times(policy: DeerPolicy, run_step: Callable[[int, ExitDecider], None], decide: ExitDecider,
                 stage: str, steps: int, warmup: int) -> list[float]:
    """Time of one stage (StageTimer names, plus 'other') over `steps` calls of run_step(s, decider)."""
    times = []
    with StageTimer(policy.model, policy.device) as timer:
        timed = timer.timed(decide)
        for s in range(warmup + steps):
            t0 = time.perf_counter()
            run_step(s, timed)
            total = (time.perf_counter() - t0) * 1e3
            stages, _ = timer.take()
            if s >= warmup:
                times.append(total - sum(stages.values()) if stage == "other" else stages[stage])
    return times


def prompt_reused(policy: DeerPolicy, frames: Sequence[BenchFrame], steps: int, warmup: int) -> dict:
    """The step's time outside the model's modules (prompt preparation, glue), prompt cached vs rebuilt.

    "Before" alternates the instruction between `text` and `text + ' '`: the prompt is stripped before it is
    tokenised, so both give the same tokens and the same work, but the cache (keyed on the raw instruction)
    misses at every step. Steps run to exit 1.
    """
    stream = frame_stream(frames)
    f = next(stream)

    def rebuilt(s: int, decide: ExitDecider) -> None:
        policy.step(f.static, f.gripper, f.instruction + (" " if s % 2 else ""), decide)

    def cached(s: int, decide: ExitDecider) -> None:
        policy.step(f.static, f.gripper, f.instruction, decide)

    before: list[float] = []
    after: list[float] = []
    first = FixedExit(1)
    for _ in range(2):  # two blocks of each, alternated, so slow drift in machine load hits both alike
        before += _stage_times(policy, rebuilt, first, "other", max(1, steps // 2), warmup)
        after += _stage_times(policy, cached, first, "other", max(1, steps // 2), warmup)
    return measured_gain("prompt_reused", "instruction tokens, ALiBi bias and layer costs reused across steps",
                         "step outside the model's modules (prompt, glue)", before, after)


def head_state_kept(policy: DeerPolicy, steps: int, warmup: int) -> dict:
    """The reference's extra head call per step (to get the chosen exit's LSTM state), timed on its own."""
    model = policy.model
    feature = torch.randn(1, model.config.d_model, device=policy.device, dtype=model.compute_dtype)  # (1, d)
    with torch.inference_mode():
        state = model.head.step(feature, None).state
        before, after = _interleaved(lambda s: model.head.step(feature, state), lambda s: None, steps, warmup,
                                     synchronizer(policy.device))
    return measured_gain("head_state_kept", "chosen exit's LSTM state kept instead of a second head call",
                         "head, per step", before, after)


def int8_llm(fp32_exits: list[dict], int8_exits: list[dict]) -> dict:
    """LLM time at the last exit, fp32 vs int8 (both tables from timing.time_exits)."""
    b, a = fp32_exits[-1], int8_exits[-1]
    row = gain("int8_llm", "LLM Linear layers in dynamic int8 (CPU)", "LLM at the last exit", b["llm_ms_p50"],
               a["llm_ms_p50"], a["steps"])
    row.update(total_before_ms_p50=b["total_ms_p50"], total_after_ms_p50=a["total_ms_p50"])
    return row


def early_exit(exits: list[dict]) -> dict:
    """What DeeR itself saves on the whole step: exit 1 vs the last exit (from timing.time_exits)."""
    b, a = exits[-1], exits[0]
    return gain("early_exit", f"exit 1 ({a['layers']} LLM layers) instead of the last ({b['layers']} layers)",
                "whole step", b["total_ms_p50"], a["total_ms_p50"], a["steps"])
