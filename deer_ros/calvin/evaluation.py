"""Open-loop evaluation: the policy's actions against the recorded ones, per segment and overall.

Actions are CALVIN relative actions (7,): translation (3) and rotation (3) as scaled deltas in [-1, 1], then the
gripper (+1 open, -1 close). One scaled unit is `MAX_REL_POS_M` metres and `MAX_REL_ORN_RAD` radians
(calvin_env Robot.max_rel_pos / max_rel_orn), so errors are reported in both units. Each action also carries
the compute it cost (exit index, LLM layers, GFLOPs), summarised alongside.
"""
from __future__ import annotations

import json
import math
import os
from collections import Counter
from pathlib import Path
from typing import Mapping

import numpy as np

MAX_REL_POS_M = 0.02    # metres per scaled translation unit (calvin_env Robot.max_rel_pos)
MAX_REL_ORN_RAD = 0.05  # radians per scaled rotation unit (calvin_env Robot.max_rel_orn)


def _action(value, what: str) -> np.ndarray:
    a = np.asarray(value, dtype=np.float64).reshape(-1)
    if a.shape != (7,):
        raise ValueError(f"{what} action must have 7 values (xyz, euler, gripper), got shape {np.shape(value)}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{what} action contains NaN or Inf: {a.tolist()}")
    return a


def action_metrics(predicted: np.ndarray, recorded: np.ndarray, exit_index: np.ndarray, layers: np.ndarray,
                   gflops: np.ndarray) -> dict:
    """Error and compute statistics of N actions. predicted, recorded: (N, 7); the rest: (N,).

    RMSE and MAE are taken over all N*3 components of translation (resp. rotation). Gripper agreement is the
    fraction of actions whose gripper commands the same state (open = value > 0).
    """
    n = len(predicted)
    if n == 0:
        return {"actions": 0}
    err = predicted[:, :6] - recorded[:, :6]  # (N, 6) in scaled units
    out: dict = {"actions": n}
    for name, cols, unit_name, unit in (("translation", slice(0, 3), "m", MAX_REL_POS_M),
                                        ("rotation", slice(3, 6), "rad", MAX_REL_ORN_RAD)):
        e = err[:, cols]
        rmse, mae = math.sqrt(float(np.mean(e ** 2))), float(np.mean(np.abs(e)))
        out.update({f"{name}_rmse": rmse, f"{name}_mae": mae,
                    f"{name}_rmse_{unit_name}": rmse * unit, f"{name}_mae_{unit_name}": mae * unit})
    out["pose_rmse"] = math.sqrt(float(np.mean(err ** 2)))  # all 6 pose values, scaled units
    out["gripper_agreement"] = float(np.mean((predicted[:, 6] > 0) == (recorded[:, 6] > 0)))
    out["exit_histogram"] = {str(k): v for k, v in sorted(Counter(exit_index.tolist()).items())}
    out["mean_exit"] = float(np.mean(exit_index))
    out["mean_layers"] = float(np.mean(layers))
    out["mean_gflops"] = float(np.mean(gflops))
    return out


class OpenLoopEvaluator:
    """Accumulates (segment, predicted action, recorded action, exit, layers, GFLOPs) and summarises them."""

    def __init__(self) -> None:
        self._segments: list[int] = []
        self._predicted: list[np.ndarray] = []
        self._recorded: list[np.ndarray] = []
        self._compute: list[tuple[int, int, float]] = []  # (exit_index, layers, gflops)

    def __len__(self) -> int:
        return len(self._segments)

    def add(self, segment: int, predicted, recorded, exit_index: int, layers: int, gflops: float) -> None:
        """Record one action of `segment` (the index of the segment in the split)."""
        if exit_index < 1 or layers < 1 or not math.isfinite(gflops) or gflops < 0:
            raise ValueError(f"invalid compute record: exit_index={exit_index} (1-based), layers={layers} (>= 1), "
                             f"gflops={gflops} (finite, >= 0)")
        self._predicted.append(_action(predicted, "predicted"))
        self._recorded.append(_action(recorded, "recorded"))
        self._segments.append(int(segment))
        self._compute.append((int(exit_index), int(layers), float(gflops)))

    def _metrics(self, rows: list[int]) -> dict:
        compute = np.array([self._compute[i] for i in rows], dtype=np.float64).reshape(-1, 3)
        return action_metrics(np.array([self._predicted[i] for i in rows]).reshape(-1, 7),
                              np.array([self._recorded[i] for i in rows]).reshape(-1, 7),
                              compute[:, 0].astype(np.int64), compute[:, 1], compute[:, 2])

    def to_json(self, segment_names: Mapping[int, str] | None = None) -> dict:
        """A JSON-ready summary: {'overall': metrics, 'segments': {'<index>': metrics + 'name'}}.

        `segment_names` (e.g. index -> instruction) labels the per-segment entries.
        """
        by_segment: dict[int, list[int]] = {}
        for row, segment in enumerate(self._segments):
            by_segment.setdefault(segment, []).append(row)
        segments = {}
        for segment in sorted(by_segment):
            entry = self._metrics(by_segment[segment])
            if segment_names is not None and segment in segment_names:
                entry["name"] = segment_names[segment]
            segments[str(segment)] = entry
        return {"overall": self._metrics(list(range(len(self)))), "segments": segments}

    def write(self, path: str | os.PathLike, segment_names: Mapping[int, str] | None = None) -> Path:
        """Write `to_json()` to `path` (parents created); return the path."""
        path = Path(path).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(segment_names), indent=2))
        return path
