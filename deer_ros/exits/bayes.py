"""Online threshold search (the paper's "DeeR w. online"): Bayesian optimisation of the thresholds under a budget.

An evaluator maps thresholds to (score, average GFLOPs), score higher-is-better: the average successful length of
closed-loop LH-MTLC chains in the simulator (`ClosedLoopEvaluator`, the paper's setting), or, offline, minus the
action error on recorded episodes (`OfflineEvaluator`). The search minimises

    -score + penalty * max(0, gflops / budget - 1)

with a Gaussian-process surrogate (scikit-optimize, ask/tell, the machinery behind `gp_minimize`), over a box
around starting thresholds (typically solved for the budget). Like the reference, the penalty is soft; unlike it,
it is relative to the budget (so it does not depend on the model size), the box is clipped at 0 (criterion values
are never negative) and the number of calls is the caller's.

Resumable: every evaluation is appended to a JSON log at once; a later run with the same log, budget and box
re-tells the logged points to the optimiser and only runs the calls that are still missing.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from deer_ros.calvin.replay import ReplaySegment, open_loop
from deer_ros.dependencies import require
from deer_ros.exits.controller import ExitController
from deer_ros.exits.criteria import DEFAULT_CRITERION
from deer_ros.exits.solver import ALWAYS, resolve_max_exit
from deer_ros.files import write_text_atomic

Evaluator = Callable[[np.ndarray], tuple[float, float]]  # thresholds (n_exits,) -> (score, average GFLOPs)
LOG_FORMAT = "deer_ros.threshold_search/1"


@dataclass(frozen=True)
class Evaluation:
    thresholds: list[float]  # all n_exits entries
    score: float
    gflops: float
    objective: float


@dataclass(frozen=True)
class SearchResult:
    best: Evaluation  # lowest objective
    evaluations: list[Evaluation]  # in the order they were run, logged ones first


def search_box(init: Sequence[float], relative: float = 0.5, minimum: float = 1e-4) -> list[tuple[float, float]]:
    """Bounds per searched threshold: init +- max(relative * init, minimum), clipped at 0.

    A disabled exit (negative threshold) is searched from 0 up to `minimum`-or-relative of the mean positive
    threshold, so the search can switch it on.
    """
    t = np.asarray(init, dtype=np.float64)
    positive = t[t > 0]
    scale = max(float(positive.mean()) * relative if positive.size else 0.0, minimum)
    box = []
    for x in t:
        radius = max(relative * x, minimum) if x > 0 else scale
        box.append((max(float(x) - radius, 0.0), max(float(x), 0.0) + radius))
    return box


def objective(score: float, gflops: float, budget: float, penalty: float) -> float:
    return -score + penalty * max(0.0, gflops / budget - 1.0)


class _Log:
    """The JSON log of a search: its settings and every evaluation so far."""

    def __init__(self, path: Path | None, settings: dict[str, Any]) -> None:
        self.path, self.settings, self.evaluations = path, settings, []
        if path is None or not path.exists():
            return
        try:
            data = json.loads(path.read_text())
            logged = {k: data[k] for k in settings}
            evaluations = [Evaluation(**e) for e in data["evaluations"]]
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a threshold-search log ({exc}); give a new --log path") from exc
        if data.get("format") != LOG_FORMAT or logged != json.loads(json.dumps(settings)):  # floats round-trip
            raise ValueError(f"{path}: this log was written by a search with other settings ({logged}); resume "
                             f"with the same budget, box and penalty, or give a new log path")
        self.evaluations = evaluations

    def append(self, evaluation: Evaluation) -> None:
        self.evaluations.append(evaluation)
        if self.path is None:
            return
        # atomic: a killed search leaves the previous log intact
        write_text_atomic(self.path, json.dumps({"format": LOG_FORMAT, **self.settings,
                                                 "evaluations": [e.__dict__ for e in self.evaluations]}, indent=1))


def search_thresholds(evaluator: Evaluator, init_thresholds: Sequence[float], budget: float, n_calls: int = 20,
                      max_exit: int | None = None, box: Sequence[tuple[float, float]] | None = None,
                      penalty: float = 1.0, log_path: str | os.PathLike | None = None, acq_func: str = "EI",
                      n_initial_points: int = 5, seed: int = 0) -> SearchResult:
    """Search the thresholds of exits 1..cap-1 (the cap always stops) for the best penalised score.

    `init_thresholds` (n_exits,) is evaluated first and centres the default box (`search_box`). `n_calls`
    counts all evaluations, logged ones included.
    """
    # imported here: scikit-optimize is slow to import, and an extra (deer_ros[search])
    Optimizer = require("skopt", "the Bayesian threshold search").Optimizer

    init = np.asarray(init_thresholds, dtype=np.float64)
    cap = resolve_max_exit(max_exit, len(init))
    if cap < 2:
        raise ValueError("nothing to search: with one allowed exit every step stops there")
    if not (math.isfinite(budget) and budget > 0):
        raise ValueError(f"budget must be a positive number of GFLOPs, got {budget}")
    bounds = [tuple(map(float, b)) for b in (box or search_box(init[: cap - 1]))]
    if len(bounds) != cap - 1 or any(not lo < hi for lo, hi in bounds):
        raise ValueError(f"box must give {cap - 1} (low, high) pairs with low < high, got {bounds}")
    log = _Log(Path(log_path).expanduser() if log_path else None,
               {"budget": float(budget), "penalty": float(penalty), "max_exit": cap, "box": bounds})

    def full(x: Iterable[float]) -> np.ndarray:
        t = np.full(len(init), ALWAYS)
        t[: cap - 1] = list(x)
        return t

    def run(x: Sequence[float]) -> float:
        score, gflops = evaluator(full(x))
        e = Evaluation([float(v) for v in full(x)], float(score), float(gflops),
                       objective(score, gflops, budget, penalty))
        log.append(e)
        return e.objective

    opt = Optimizer(bounds, base_estimator="GP", acq_func=acq_func, n_initial_points=n_initial_points,
                    random_state=seed)
    if log.evaluations:
        opt.tell([e.thresholds[: cap - 1] for e in log.evaluations], [e.objective for e in log.evaluations])
    else:
        start = [min(max(float(v), lo), hi) for v, (lo, hi) in zip(init[: cap - 1], bounds)]
        opt.tell(start, run(start))
    while len(log.evaluations) < n_calls:
        x = opt.ask()
        opt.tell(x, run(x))
    best = min(log.evaluations, key=lambda e: e.objective)
    return SearchResult(best, list(log.evaluations))


class OfflineEvaluator:
    """Replays recorded segments through a policy under given thresholds: score = -RMSE of the 6-D pose action
    against the recorded rel_actions (scaled units), and the average GFLOPs actually spent.

    `segments` come from `deer_ros.calvin.replay.load_segments`; the replay resets the recurrent state at each
    segment, and each step runs through the same `ExitController` the node uses, so the history follows the
    exits the thresholds choose.
    """

    def __init__(self, policy: Any, segments: Sequence[ReplaySegment], criterion: str = DEFAULT_CRITERION,
                 max_exit: int | None = None) -> None:
        if not segments or not all(s.frames for s in segments):
            raise ValueError("the offline evaluator needs at least one recorded segment with frames")
        self.policy, self.segments, self.criterion, self.max_exit = policy, segments, criterion, max_exit

    def __call__(self, thresholds: np.ndarray) -> tuple[float, float]:
        controller = ExitController(self.criterion, thresholds, self.max_exit)
        metrics = open_loop(self.policy, self.segments, controller).to_json()["overall"]
        return -metrics["pose_rmse"], metrics["mean_gflops"]


class _ThresholdPolicy:
    """A DeerPolicy under fixed thresholds, as the LH-MTLC protocol drives a policy (reset / act)."""

    def __init__(self, policy: Any, decider: ExitController) -> None:
        self.policy, self.decider = policy, decider

    def reset(self) -> None:
        self.policy.reset()

    def act(self, obs: Any, instruction: str) -> Any:
        return self.policy.step(obs.rgb_static, obs.rgb_gripper, instruction, self.decider)  # a StepResult


class ClosedLoopEvaluator:
    """Runs LH-MTLC chains in a simulator under given thresholds: score = average successful length (0-5),
    and the mean GFLOPs over every step (the quantity `flops_budget` controls).

    `env` is a `deer_ros.calvin.sim.CalvinSim` (or anything with its reset/start_subtask/step/subtask_done);
    `sequences` are `deer_ros.calvin.protocol.EvalSequence`s, the same ones for every call so calls compare.
    """

    def __init__(self, policy: Any, env: Any, sequences: Sequence[Any], criterion: str = DEFAULT_CRITERION,
                 max_exit: int | None = None, instructions: dict[str, str] | None = None,
                 max_steps: int | None = None) -> None:
        if not sequences:
            raise ValueError("the closed-loop evaluator needs at least one evaluation sequence")
        self.policy, self.env, self.sequences = policy, env, list(sequences)
        self.criterion, self.max_exit, self.instructions, self.max_steps = criterion, max_exit, instructions, max_steps

    def __call__(self, thresholds: np.ndarray) -> tuple[float, float]:
        from deer_ros.calvin.protocol import SUBTASK_STEPS, lh_mtlc_metrics, run_lh_mtlc

        controlled = _ThresholdPolicy(self.policy, ExitController(self.criterion, thresholds, self.max_exit))
        results = run_lh_mtlc(self.env, controlled, self.sequences, self.instructions,
                              self.max_steps or SUBTASK_STEPS)
        metrics = lh_mtlc_metrics(results)
        return float(metrics["avg_len"]), float(metrics["mean_gflops"] or 0.0)
