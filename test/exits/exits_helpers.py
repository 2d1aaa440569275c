"""Shared helpers for the exits tests: candidates with the ExitCandidate fields, synthetic calibration values."""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

GFLOPS_3B = np.array([2.6, 5.2, 7.8, 10.4, 13.0, 15.6])  # DeeR-B per-exit cumulative LLM GFLOPs (reference 2.5)
LAYERS_3B = np.array([2, 4, 6, 8, 10, 12])


def candidate(index: int, pose, prev_pose, feature=None, prev_feature=None, is_last: bool = False):
    """An object with the fields of deer_ros.model.policy.ExitCandidate (kept model-free on purpose)."""
    pose, prev_pose = np.asarray(pose, float), np.asarray(prev_pose, float)
    feature = pose if feature is None else np.asarray(feature, float)
    prev_feature = prev_pose if prev_feature is None else np.asarray(prev_feature, float)
    return SimpleNamespace(index=index, layer=2 * index - 1, layers=2 * index, pose=pose, prev_pose=prev_pose,
                           feature=feature, prev_feature=prev_feature, is_last=is_last)


def valued(index: int, value: float, is_last: bool = False):
    """A candidate whose action_consistency (RMS pose difference) is exactly `value`."""
    return candidate(index, np.full(6, value), np.zeros(6), is_last=is_last)


@dataclass(frozen=True)
class Step:
    """The fields of a StepResult the budget and the cost model read (kept model-free like `candidate`)."""

    exit_index: int
    gflops: float
    llm_ms: tuple[float, ...] = ()
    exit_ms: tuple[float, ...] = ()
    head_decodes: int = 0


def synthetic_values(rng: np.random.Generator, n_exits: int, n: int, scale: float = 1.0) -> np.ndarray:
    """(n_exits, n) positive continuous values shaped like DeeR's: the first exit's are a few times larger."""
    v = rng.gamma(2.0, 0.01 * scale, size=(n_exits, n))
    v[0] *= 4.0
    return v


def run_decider(decider, values: np.ndarray, i: int) -> int:
    """Step a decider through the exits of sample i (values: (n_exits, N)); the 0-based exit it stops at."""
    n = values.shape[0]
    for k in range(n):
        if decider(valued(k + 1, values[k, i], is_last=k == n - 1)).stop or k == n - 1:
            return k
    raise AssertionError("unreachable")
