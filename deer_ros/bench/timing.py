"""Where the time of one action goes: per-stage, per-exit and per-budget timing of `DeerPolicy.step`.

Everything here times the real control path the node runs (`DeerPolicy.step`), never a re-implementation.
Stage times come from forward hooks on the model's own modules while `step` runs:
  vision      CLIP ViT on both cameras (one batched pass): from conv1 in to the transformer out
  perceiver   the shared perceiver on both cameras' patch tokens
  xattn{i}    the gated cross-attention of LLM layer i;  block{i}  its MPT block
  head        every call of the shared LSTM head (one decode at each examined exit, plus the layer before exit 1)
  criterion   the exit decider's own time (a wrapper around it)
  preprocess and total come from StepResult.timings_ms; "other" = total minus all of the above (prompt cache,
  pooling, the Python loop).
On a GPU every hook synchronises first, so each stage gets its own kernels' time. Hooks cost a few
microseconds each, so the per-exit latencies are measured without them.

Exits are timed interleaved (exit 1, 2, ..., n, exit 1, ...) so that load from other processes on a shared
machine falls on every exit alike; percentiles, not means, are reported.
"""
from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from itertools import cycle, islice
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from deer_ros.calvin.dataset import CalvinSplit
from deer_ros.calvin.replay import ReplayFrame, ReplaySegment, replay
from deer_ros.exits.calibration import Calibration, collect_calibration
from deer_ros.exits.controller import ExitBudget, ExitController, FixedExit
from deer_ros.exits.criteria import DEFAULT_CRITERION
from deer_ros.exits.solver import NEVER
from deer_ros.model.policy import DeerPolicy, ExitCandidate, ExitDecider, ExitDecision


NO_ACTION = np.zeros(7, dtype=np.float32)  # benchmark frames are only stepped on, never scored


@dataclass(frozen=True)
class BenchFrame:
    """One observation to step the policy on: both cameras and the instruction of its segment."""
    static: np.ndarray  # (H, W, 3) uint8
    gripper: np.ndarray  # (h, w, 3) uint8
    instruction: str
    segment: int


def summarize(samples: Sequence[float]) -> dict[str, float]:
    """p50, p95, mean and count of a list of timings (ms)."""
    a = np.asarray(samples, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no samples to summarise: run at least one timed step (--steps >= 1)")
    return {"p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)), "mean": float(a.mean()),
            "n": int(a.size)}


def synchronizer(device: torch.device) -> Callable[[], None]:
    """A function that waits for queued GPU work (a no-op on the CPU)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


class StageTimer:
    """Forward hooks that add up the time spent in each stage of a DeerModel while they are installed.

    Use as a context manager around `policy.step` calls; `take()` returns the per-stage milliseconds since the
    last `take()` and how many times each stage ran.
    """

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        self._sync = synchronizer(device)
        self._totals: dict[str, float] = defaultdict(float)
        self._calls: Counter = Counter()
        self._started: dict[str, float] = {}
        self._handles: list = []
        self._span("vision", model.vision.conv1, model.vision.transformer)
        self._span("perceiver", model.perceiver, model.perceiver)
        for i in range(model.n_layers):
            if str(i) in model.xattn:
                self._span(f"xattn{i}", model.xattn[str(i)], model.xattn[str(i)])
            self._span(f"block{i}", model.blocks[i], model.blocks[i])
        self._span("head", model.head.rnn, model.head.gripper)  # rnn runs first, the gripper MLP last

    def _span(self, name: str, first: nn.Module, last: nn.Module) -> None:
        self._handles.append(first.register_forward_pre_hook(lambda *_: self._start(name)))
        self._handles.append(last.register_forward_hook(lambda *_: self._stop(name)))

    def _start(self, name: str) -> None:
        self._sync()
        self._started[name] = time.perf_counter()

    def _stop(self, name: str) -> None:
        self._sync()
        self._totals[name] += (time.perf_counter() - self._started.pop(name)) * 1e3
        self._calls[name] += 1

    def timed(self, decide: ExitDecider) -> ExitDecider:
        """`decide` with its own time counted as the 'criterion' stage."""
        def wrapper(candidate: ExitCandidate) -> ExitDecision:
            t0 = time.perf_counter()
            stop = decide(candidate)
            self._totals["criterion"] += (time.perf_counter() - t0) * 1e3
            self._calls["criterion"] += 1
            return stop
        return wrapper

    def take(self) -> tuple[dict[str, float], Counter]:
        totals, calls = dict(self._totals), self._calls
        self._totals, self._calls = defaultdict(float), Counter()
        return totals, calls

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> StageTimer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def frame_stream(frames: Sequence[BenchFrame]) -> Iterator[BenchFrame]:
    if not frames:
        raise ValueError("no benchmark frames: the CALVIN split gave none")
    return cycle(frames)


def examine_every_exit(n_exits: int) -> ExitController:
    """The DeeR rule with thresholds that never fire: every exit's criterion is evaluated, the last one stops."""
    return ExitController(DEFAULT_CRITERION, thresholds=[NEVER] * n_exits)


def time_breakdown(policy: DeerPolicy, frames: Sequence[BenchFrame], steps: int, warmup: int) -> dict:
    """Per-stage time of a step that runs every LLM layer and evaluates the criterion at every exit."""
    stream = frame_stream(frames)
    per_step: list[dict[str, float]] = []
    calls: Counter = Counter()
    with StageTimer(policy.model, policy.device) as timer:
        decide = timer.timed(examine_every_exit(len(policy.exits)))
        for s in range(warmup + steps):
            f = next(stream)
            result = policy.step(f.static, f.gripper, f.instruction, decide)
            stages, step_calls = timer.take()
            if s < warmup:
                continue
            stages["preprocess"] = result.timings_ms["preprocess"]
            stages["total"] = result.timings_ms["total"]
            layer_keys = [k for k in stages if k.startswith(("xattn", "block"))]
            stages["llm_layers"] = sum(stages[k] for k in layer_keys)
            named = ("preprocess", "vision", "perceiver", "llm_layers", "head", "criterion")
            stages["other"] = stages["total"] - sum(stages.get(k, 0.0) for k in named)
            layer_ms = [stages.get(f"xattn{i}", 0.0) + stages[f"block{i}"] for i in range(policy.model.n_layers)]
            cumulative = np.cumsum(layer_ms)
            for e in policy.exits:
                stages[f"ratio{e.index}"] = float(cumulative[e.layer] / cumulative[-1])
            per_step.append(stages)
            calls = step_calls
    keys = sorted({k for s in per_step for k in s})
    stage_ms = {k: summarize([s.get(k, 0.0) for s in per_step]) for k in keys}
    n_layers = policy.model.n_layers
    layers = [{"layer": i,
               "xattn_ms": stage_ms[f"xattn{i}"]["p50"] if f"xattn{i}" in stage_ms else 0.0,
               "block_ms": stage_ms[f"block{i}"]["p50"]} for i in range(n_layers)]
    # Within one step, the layers' time up to exit k over all layers' time: a second, load-robust view of the
    # realised savings (every ratio comes from one step, so machine load that changes between steps cancels).
    in_step = [{"index": e.index, "layers": e.layers, "time_ratio_p50": stage_ms[f"ratio{e.index}"]["p50"]}
               for e in policy.exits]
    return {"exit": policy.exits[-1].index, "layers_run": n_layers, "steps": len(per_step),
            "head_calls_per_step": int(calls["head"]), "criterion_calls_per_step": int(calls["criterion"]),
            "stages_ms": {k: v for k, v in stage_ms.items() if not k.startswith(("xattn", "block", "ratio"))},
            "layers_ms": layers, "in_step_ratios": in_step}


def time_exits(policy: DeerPolicy, frames: Sequence[BenchFrame], steps: int, warmup: int,
               only: Sequence[int] | None = None) -> list[dict]:
    """Latency of a step that stops at exit k, for every built exit (interleaved), with the FLOPs ratio check.

    `only` restricts the measurement to those exit indices (the ratios then refer to the last of them).
    Per exit: index, layers, gflops (mean LLM GFLOPs at the benchmark prompts), llm/head/total p50 and p95 (ms),
    time_ratio = llm_ms_p50 / llm_ms_p50 at the last exit, flops_ratio = gflops / gflops at the last exit,
    ratio_error = time_ratio / flops_ratio - 1.
    """
    stream = frame_stream(frames)
    indices = list(only) if only else [e.index for e in policy.exits]
    samples: dict[int, dict[str, list[float]]] = {k: defaultdict(list) for k in indices}
    deciders = {k: FixedExit(k) for k in indices}
    for s in range(warmup + steps):
        f = next(stream)  # one frame per round: every exit sees the same images and prompt length
        for j in range(len(indices)):
            k = indices[(j + s) % len(indices)]  # rotate the order so no exit always runs first in a round
            r = policy.step(f.static, f.gripper, f.instruction, deciders[k])
            if r.exit_index != k:
                raise RuntimeError(f"FixedExit({k}) stopped at exit {r.exit_index}: the policy ignored its decider")
            if s >= warmup:
                for key in ("llm", "head", "total"):
                    samples[k][key].append(r.timings_ms[key])
                samples[k]["gflops"].append(r.gflops)
    rows = []
    for info in (e for e in policy.exits if e.index in samples):
        got = samples[info.index]
        llm, head, total = summarize(got["llm"]), summarize(got["head"]), summarize(got["total"])
        rows.append({"index": info.index, "layers": info.layers, "gflops": float(np.mean(got["gflops"])),
                     "llm_ms_p50": llm["p50"], "llm_ms_p95": llm["p95"], "head_ms_p50": head["p50"],
                     "total_ms_p50": total["p50"], "total_ms_p95": total["p95"], "steps": total["n"]})
    last = rows[-1]
    for row in rows:
        row["time_ratio"] = row["llm_ms_p50"] / last["llm_ms_p50"]
        row["flops_ratio"] = row["gflops"] / last["gflops"]
        row["ratio_error"] = row["time_ratio"] / row["flops_ratio"] - 1.0
    return rows


def bench_segments(frames: Sequence[BenchFrame]) -> list[ReplaySegment]:
    """The benchmark frames grouped by their segment, in order, as replay input."""
    by_segment: dict[int, list[BenchFrame]] = defaultdict(list)
    for f in frames:
        by_segment[f.segment].append(f)
    return [ReplaySegment(seg, group[0].instruction, [ReplayFrame(f.static, f.gripper, NO_ACTION) for f in group])
            for seg, group in by_segment.items()]


def calibrate(policy: DeerPolicy, frames: Sequence[BenchFrame]) -> Calibration:
    """A calibration of `policy` on `frames` (grouped by segment, the history reset per segment)."""
    return collect_calibration(policy, bench_segments(frames), criteria=[DEFAULT_CRITERION],
                               meta={"purpose": "benchmark"})


def time_budgets(policy: DeerPolicy, calibration: Calibration, frames: Sequence[BenchFrame],
                 budgets: Sequence[float], steps: int, warmup: int) -> list[dict]:
    """Latency under each average-GFLOPs budget, through the node's own ExitBudget (solver + tracker), the frames
    replayed segment by segment (history reset at each) for as long as the steps need."""
    if not frames:
        raise ValueError("no benchmark frames: the CALVIN split gave none")
    segments = bench_segments(frames)
    rows = []
    for budget in budgets:
        exit_budget = ExitBudget.create(policy.exits, calibration, {"flops_budget": float(budget)})
        got: dict[str, list[float]] = defaultdict(list)
        for s, step in enumerate(islice(replay(policy, segments, exit_budget.decider, passes=None), warmup + steps)):
            r = step.result
            exit_budget.record(r)
            if s >= warmup:
                for key in ("llm", "total"):
                    got[key].append(r.timings_ms[key])
                got["gflops"].append(r.gflops)
                got["layers"].append(r.layers)
        llm, total = summarize(got["llm"]), summarize(got["total"])
        rows.append({"flops_budget": float(budget), "realised_gflops": float(np.mean(got["gflops"])),
                     "mean_layers": float(np.mean(got["layers"])), "llm_ms_p50": llm["p50"],
                     "llm_ms_p95": llm["p95"], "total_ms_p50": total["p50"], "total_ms_p95": total["p95"],
                     "steps": total["n"]})
    return rows


def budget_points(exit_gflops: Sequence[float], fractions: Sequence[float] = (0.25, 0.5, 0.75)) -> list[float]:
    """Budgets spread over the reachable range [exit 1, last exit] of average GFLOPs."""
    lo, hi = float(exit_gflops[0]), float(exit_gflops[-1])
    return [lo + f * (hi - lo) for f in fractions]


def read_throughput(split: CalvinSplit, max_frames: int | None = None,
                    keys: Iterable[str] | None = ()) -> dict[str, float]:
    """Frames per second of sequential `split.frame` reads over the episodes (what the replay bridge does).

    `keys=()` reads what the bridge needs (both cameras and rel_actions); None reads every key.
    """
    indices = [i for start, end in split.episodes for i in range(start, end + 1)][:max_frames]
    t0 = time.perf_counter()
    for index in indices:
        split.frame(index, keys)
    seconds = time.perf_counter() - t0
    return {"frames": len(indices), "seconds": seconds, "frames_per_s": len(indices) / seconds}
