"""Exit criteria: how far apart two successive exits are, as one float per candidate exit.

A criterion maps an `ExitCandidate` (deer_ros.model.policy) to a value; the exit fires when the value is at most
the exit's threshold, so every criterion here is a distance (0 = the two exits agree) and is never negative.
That is what lets the threshold solver use a negative threshold to mean "never stop at this exit".

Registered names (DeeR's `threshold_type` options, restated, plus the paper's feature-similarity ablation):
  action_consistency       RMS of the 6-D pose difference (DeeR 'L2', the default)
  action_consistency_mean  mean absolute pose difference (DeeR 'mean')
  action_consistency_max   largest absolute pose difference (DeeR 'max')
  action_cosine            1 - cosine similarity of the two poses (DeeR 'cosine')
  feature_cosine           1 - cosine similarity of the two max-pooled exit features
For the first exit the "previous" pose/feature is a decode of the layer before it, as in the reference.
Only the pose is compared, never the gripper (the reference does the same).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

Criterion = Callable[[Any], float]  # ExitCandidate -> value >= 0

DEFAULT_CRITERION = "action_consistency"
_EPS = 1e-12  # keeps the cosine of a zero vector finite


def as_vector(x: Any) -> np.ndarray:
    """A torch tensor (any device/dtype) or array-like as a flat float64 NumPy vector."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64).reshape(-1)


def _pair(a: Any, b: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    u, v = as_vector(a), as_vector(b)
    if u.shape != v.shape:
        raise ValueError(f"{what}: the two exits have different sizes {u.shape} and {v.shape}")
    return u, v


def _cosine_distance(u: np.ndarray, v: np.ndarray) -> float:
    cos = float(u @ v) / max(float(np.linalg.norm(u) * np.linalg.norm(v)), _EPS)
    return float(min(max(1.0 - cos, 0.0), 2.0))  # clip float error so the value stays in [0, 2]


def action_consistency(c: Any) -> float:
    u, v = _pair(c.pose, c.prev_pose, "pose")
    return float(np.sqrt(np.mean((u - v) ** 2)))


def action_consistency_mean(c: Any) -> float:
    u, v = _pair(c.pose, c.prev_pose, "pose")
    return float(np.mean(np.abs(u - v)))


def action_consistency_max(c: Any) -> float:
    u, v = _pair(c.pose, c.prev_pose, "pose")
    return float(np.max(np.abs(u - v)))


def action_cosine(c: Any) -> float:
    return _cosine_distance(*_pair(c.pose, c.prev_pose, "pose"))


def feature_cosine(c: Any) -> float:
    return _cosine_distance(*_pair(c.feature, c.prev_feature, "feature"))


CRITERIA: dict[str, Criterion] = {
    "action_consistency": action_consistency,
    "action_consistency_mean": action_consistency_mean,
    "action_consistency_max": action_consistency_max,
    "action_cosine": action_cosine,
    "feature_cosine": feature_cosine,
}


def criterion_names() -> tuple[str, ...]:
    return tuple(CRITERIA)


def get_criterion(name: str) -> Criterion:
    """The criterion registered as `name`; ValueError naming the known ones otherwise."""
    try:
        return CRITERIA[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown exit criterion {name!r}; known: {', '.join(CRITERIA)}") from None
