"""The time cost of each exit, learned online from the steps the policy takes on this machine. ROS-free.

A step's arrival->publish time splits into parts the policy measures (StepResult.llm_ms / exit_ms per examined
exit) and the rest, which does not depend on the exit chosen:

    fixed      total - LLM layers - exit examinations: image conversion, pairing, preprocessing, vision,
               prompt, action conversion and publication
    LLM rate   ms per LLM GFLOP: the layers' time over the GFLOPs they spent (the step's real prompt)
    head       ms per head decode, the decider included: exit k costs k + 1 decodes (DeerPolicy decodes
               the layer before the first exit too)

so that stopping at exit k (1-based) is expected to cost

    fixed + rate * gflops_k * prompt_scale + head * (k + 1)

One rate for all layers (not one estimate per exit) because every step measures it, however shallow: a change
of load or device moves the cost of the deep exits even while the budget keeps the policy from running them.
DeeR's layers are alike, so their time follows their GFLOPs (docs/benchmarks.md measures how closely).

Each part is the median of its latest `window` samples: robust to outliers (fewer than half the window), and
it forgets: after a step change of the machine's speed the estimate is on the new level once more than half
the window holds new samples, i.e. within `follow_steps = window // 2 + 1` steps.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

DEFAULT_WINDOW = 32
DEFAULT_WARMUP = 10
_MIN_PART_MS = 1e-6  # keeps expected costs strictly increasing with the exit (the solver requires it)


class TimedStep(Protocol):
    """What the cost model reads from a step (model.policy.StepResult has it all)."""

    @property
    def exit_index(self) -> int: ...
    @property
    def gflops(self) -> float: ...  # LLM GFLOPs spent, at the real prompt length
    @property
    def llm_ms(self) -> Sequence[float]: ...  # per examined exit: layers since the previous exit
    @property
    def exit_ms(self) -> Sequence[float]: ...  # per examined exit: head decodes + decider
    @property
    def head_decodes(self) -> int: ...


class WindowMedian:
    """Median of the latest `window` samples (nan before the first)."""

    def __init__(self, window: int = DEFAULT_WINDOW) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1 sample, got {window}")
        self._samples: deque[float] = deque(maxlen=int(window))

    def add(self, value: float) -> None:
        self._samples.append(float(value))

    @property
    def value(self) -> float:
        return float(np.median(self._samples)) if self._samples else float("nan")

    def __len__(self) -> int:
        return len(self._samples)


@dataclass(frozen=True)
class CostTable:
    """A snapshot of the learned costs: immutable, so any thread may read the one it holds."""

    fixed_ms: float
    llm_ms_per_gflop: float
    head_ms: float  # per decode
    exit_ms: tuple[float, ...]  # expected arrival->publish ms when stopping at exit 1..n (calibration prompt)
    steps: int  # steps learned from
    warmup: int  # steps needed before the costs are trusted

    @property
    def warm(self) -> bool:
        return self.steps >= self.warmup

    def first_exit_ms(self) -> float:
        return self.exit_ms[0]

    def deepest_within(self, cap_ms: float, max_exit: int) -> int:
        """The deepest exit (1-based, <= max_exit) whose expected cost is <= cap_ms; 0 when none is."""
        fits = [k + 1 for k in range(max_exit) if self.exit_ms[k] <= cap_ms]
        return fits[-1] if fits else 0

    def report(self) -> dict[str, str]:
        """Diagnostics key/values (ms)."""
        if not self.steps:
            return {"cost_model": f"warming up: 0/{self.warmup} steps"}
        state = "warm" if self.warm else f"warming up: {self.steps}/{self.warmup} steps"
        return {"cost_model": state, "cost_fixed_ms": f"{self.fixed_ms:.3g}",
                "cost_llm_ms_per_gflop": f"{self.llm_ms_per_gflop:.3g}", "cost_head_ms": f"{self.head_ms:.3g}",
                "cost_exit_ms": " ".join(f"{k + 1}:{c:.3g}" for k, c in enumerate(self.exit_ms))}


class CostModel:
    """Online estimate of each exit's time cost; `record` after every step, `table()` for the solver."""

    def __init__(self, exit_gflops: Sequence[float], window: int = DEFAULT_WINDOW,
                 warmup: int = DEFAULT_WARMUP) -> None:
        self.exit_gflops = np.asarray(exit_gflops, dtype=np.float64)
        if self.exit_gflops.ndim != 1 or len(self.exit_gflops) < 1 or np.any(self.exit_gflops <= 0):
            raise ValueError(f"exit_gflops must be positive, one per exit, got {self.exit_gflops.tolist()}")
        if warmup < 1:
            raise ValueError(f"warmup must be >= 1 step, got {warmup}")
        self.window, self.warmup = int(window), int(warmup)
        self.fixed, self.rate, self.head = (WindowMedian(window) for _ in range(3))
        self.steps = 0

    @property
    def follow_steps(self) -> int:
        """Steps after which a step change of every part's cost is fully followed."""
        return self.window // 2 + 1

    @property
    def warm(self) -> bool:
        return self.steps >= self.warmup

    def record(self, step: TimedStep, total_ms: float) -> None:
        """Learn from one step whose arrival->publish time was `total_ms`. Steps without per-exit timings (or
        with a non-finite time) teach nothing and are ignored."""
        llm, exam = np.asarray(step.llm_ms, dtype=np.float64), np.asarray(step.exit_ms, dtype=np.float64)
        if not len(llm) or not np.all(np.isfinite(llm)) or not np.all(np.isfinite(exam)) \
                or not np.isfinite(total_ms) or step.gflops <= 0 or step.head_decodes < 1:
            return
        self.fixed.add(max(total_ms - llm.sum() - exam.sum(), 0.0))
        self.rate.add(llm.sum() / step.gflops)
        self.head.add(exam.sum() / step.head_decodes)
        self.steps += 1

    def expected_ms(self, prompt_scale: float = 1.0) -> np.ndarray:
        """(n_exits,) expected ms of stopping at each exit, with the LLM cost scaled to the current prompt."""
        fixed = max(self.fixed.value, 0.0)
        rate, head = max(self.rate.value, _MIN_PART_MS), max(self.head.value, _MIN_PART_MS)
        decodes = np.arange(2, len(self.exit_gflops) + 2)
        return fixed + rate * self.exit_gflops * prompt_scale + head * decodes

    def table(self, prompt_scale: float = 1.0) -> CostTable:
        if not self.steps:
            nan = float("nan")
            return CostTable(nan, nan, nan, tuple([nan] * len(self.exit_gflops)), 0, self.warmup)
        return CostTable(self.fixed.value, self.rate.value, self.head.value,
                         tuple(float(c) for c in self.expected_ms(prompt_scale)), self.steps, self.warmup)
