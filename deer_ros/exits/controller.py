"""Exit deciders and the run-time budget: what the policy node calls.

- `FixedExit(k)`: run to exit k (or the last allowed one).
- `ExitController`: the DeeR rule, stop at exit k when criterion(candidate) <= thresholds[k].
- `BudgetSettings` + `resolve_budget`: the budget parameters (flops_budget, max_exit, exit_ratio, thresholds,
  criterion, budget_tracking), validated and solved into thresholds with no side effects; a refusal is a
  `BudgetError` whose message is the reason given back to `ros2 param set`.
- `ExitBudget`: the state the node keeps: settings, the controller, the tracker; `check` / `apply` for the
  parameter callbacks, `record` after each action, `report` for diagnostics.

Which thresholds are in force: explicit `thresholds` when non-empty, else `flops_budget` when > 0 (solved on
the calibration, corrected online by the tracker when `budget_tracking`), else `exit_ratio`. `max_exit` caps
all three. Without a calibration only explicit thresholds or "run to the cap" are possible.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, replace
from numbers import Integral, Real
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

from deer_ros.exits import solver
from deer_ros.exits.calibration import Calibration
from deer_ros.exits.criteria import DEFAULT_CRITERION, Criterion, get_criterion
from deer_ros.exits.costs import CostModel, CostTable, TimedStep
from deer_ros.exits.tracking import BudgetTracker
from deer_ros.model.decision import CONTINUE, STOP, ExitDecision, ExitView


class BudgetError(ValueError):
    """A budget setting that is refused; the message is the reason."""


class FixedExit:
    """Decider that stops at exit `k` (1-based); a policy built with fewer exits stops at its last one."""

    def __init__(self, k: int) -> None:
        if isinstance(k, bool) or not isinstance(k, Integral) or k < 1:
            raise ValueError(f"FixedExit needs a 1-based exit index >= 1, got {k!r}")
        self.k = int(k)

    def __call__(self, candidate: ExitView) -> ExitDecision:
        return STOP if candidate.index >= self.k else CONTINUE

    def __repr__(self) -> str:
        return f"FixedExit({self.k})"


class ExitController:
    """DeeR exit rule as an ExitDecider: stop at the first exit whose criterion value is <= its threshold.

    `thresholds` has one entry per built exit (index - 1); `max_exit` (1-based, 0/None = none) forces a stop
    there. Each decision carries the criterion value it compared (DeerPolicy collects them in StepResult.values).
    """

    def __init__(self, criterion: str | Criterion = DEFAULT_CRITERION, thresholds: Sequence[float] = (),
                 max_exit: int | None = None) -> None:
        self.configure(criterion, thresholds, max_exit)

    def configure(self, criterion: str | Criterion, thresholds: Sequence[float], max_exit: int | None) -> None:
        fn = get_criterion(criterion) if isinstance(criterion, str) else criterion
        t = np.asarray(thresholds, dtype=np.float64).reshape(-1)
        if np.any(np.isnan(t)):
            raise ValueError("thresholds contain NaN")
        self.criterion, self.thresholds, self.max_exit = fn, t, int(max_exit or 0)

    def __call__(self, candidate: ExitView) -> ExitDecision:
        value = float(self.criterion(candidate))
        position = candidate.index - 1
        if self.max_exit and candidate.index >= self.max_exit:
            return ExitDecision(True, value)
        # exits past the thresholds given stop: the caller solved thresholds for fewer exits than were built
        return ExitDecision(position >= len(self.thresholds) or bool(value <= self.thresholds[position]), value)


# ------------------------------------------------------------------------------------------ settings
@dataclass(frozen=True)
class BudgetSettings:
    """The budget parameters of the policy node (see the README table)."""

    flops_budget: float = 0.0
    max_exit: int = 0
    exit_ratio: float = 1.0
    thresholds: tuple[float, ...] = ()
    criterion: str = DEFAULT_CRITERION
    budget_tracking: bool = True
    latency_budget_ms: float = 0.0  # target average arrival->publish time; 0 = none
    latency_cap_ms: float = 0.0  # the deepest exit allowed is the deepest whose learned cost fits; 0 = none

    @property
    def mode(self) -> str:
        """Which rule sets the thresholds: 'thresholds', 'flops_budget', 'latency_budget',
        'flops_and_latency_budget' (the tighter binds) or 'exit_ratio'."""
        if self.thresholds:
            return "thresholds"
        if self.flops_budget > 0 and self.latency_budget_ms > 0:
            return "flops_and_latency_budget"
        if self.latency_budget_ms > 0:
            return "latency_budget"
        return "flops_budget" if self.flops_budget > 0 else "exit_ratio"


FIELDS = tuple(BudgetSettings.__dataclass_fields__)
LATENCY_FIELDS = ("latency_budget_ms", "latency_cap_ms")
MAX_LATENCY_MS = 600_000.0


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise BudgetError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if math.isnan(value):
        raise BudgetError(f"{name} must not be NaN")
    return float(value)


def _typed_changes(changes: Mapping[str, Any]) -> dict[str, Any]:
    """The changes with each value checked for type and basic range (BudgetError otherwise)."""
    unknown = sorted(set(changes) - set(FIELDS))
    if unknown:
        raise BudgetError(f"unknown budget setting(s) {unknown}; known: {', '.join(FIELDS)}")
    out: dict[str, Any] = {}
    for name, value in changes.items():
        if name == "flops_budget":
            v = _number(name, value)
            if not (math.isfinite(v) and v >= 0):
                raise BudgetError(f"flops_budget must be >= 0 GFLOPs (0 = no average budget), got {v}")
        elif name in LATENCY_FIELDS:
            v = _number(name, value)
            if not (math.isfinite(v) and 0 <= v <= MAX_LATENCY_MS):
                raise BudgetError(f"{name} must be 0 (off) or a time in ms up to {MAX_LATENCY_MS:g}, got {v}")
        elif name == "exit_ratio":
            v = _number(name, value)
            if not (math.isfinite(v) and v > 0):
                raise BudgetError(f"exit_ratio must be a positive number (1 = uniform exit rates), got {v}")
        elif name == "max_exit":
            if isinstance(value, bool) or not isinstance(value, Integral):
                raise BudgetError(f"max_exit must be an integer, got {type(value).__name__} {value!r}")
            v = int(value)
        elif name == "thresholds":
            if isinstance(value, (str, bytes)) or not isinstance(value, Sequence | np.ndarray):
                raise BudgetError(f"thresholds must be a list of numbers, got {type(value).__name__}")
            v = tuple(_number("each threshold", x) for x in value)
        elif name == "criterion":
            if not isinstance(value, str):
                raise BudgetError(f"criterion must be a string, got {type(value).__name__}")
            v = value
        else:  # budget_tracking
            if not isinstance(value, bool):
                raise BudgetError(f"budget_tracking must be true or false, got {value!r}")
            v = value
        out[name] = v
    return out


@dataclass(frozen=True)
class Resolved:
    """Settings that passed validation, and what they solve to."""

    settings: BudgetSettings
    thresholds: np.ndarray  # (n_exits,)
    max_exit: int  # 1-based cap in force
    solution: solver.Solution | None  # None for explicit thresholds / no calibration
    binding: str = "exit_ratio"  # what set the thresholds: thresholds, flops_budget, latency_budget_ms, exit_ratio
    cap_binding: str = "max_exit"  # what set the cap: max_exit or latency_cap_ms
    latency_note: str = ""  # why a latency setting is not (fully) in force: warming up, or cannot be met
    latency_unmet: bool = False  # a latency setting is below what the learned costs allow (its reason is in the note)


def unmet_reason(name: str, value: float, costs: CostTable, cap: int) -> str:
    """Why a time budget below the cheapest exit's learned cost cannot be met, and what would help."""
    lo, hi = costs.exit_ms[0], costs.exit_ms[cap - 1]
    return (f"{name} {value:g} ms cannot be met on this machine: a step costs {costs.fixed_ms:.3g} ms before the "
            f"LLM (image conversion, preprocessing, vision, prompt) and {lo:.3g} ms when it stops at exit 1 "
            f"(exits 1..{cap}: {lo:.3g}..{hi:.3g} ms, learned over {costs.steps} steps). What would help: a "
            f"budget of at least {lo:.3g} ms, int8 weights (dtype int8), a GPU (device cuda), fewer processes "
            "sharing the CPU; a smaller max_exit lowers the deepest exit's cost, not exit 1's")


def _warming(name: str, costs: CostTable | None) -> str:
    steps = 0 if costs is None else costs.steps
    warmup = "N" if costs is None else costs.warmup
    return (f"{name} waits for the cost model ({steps}/{warmup} steps measured): "
            "running on flops_budget / exit_ratio and max_exit meanwhile")


def _mean_exit(sol: solver.Solution) -> float:
    return float(sol.exit_fractions @ np.arange(len(sol.exit_fractions)))


def resolve_budget(current: BudgetSettings, changes: Mapping[str, Any], exit_gflops: Sequence[float],
                   calibration: Calibration | None, budget_override: float | None = None, *,
                   costs: CostTable | None = None, latency_override: float | None = None,
                   refuse_unmet: bool = True) -> Resolved:
    """Apply `changes` to `current`, validate the result and solve its thresholds. No side effects.

    `exit_gflops`: the cumulative GFLOPs of the model's built exits. `budget_override` / `latency_override`
    solve for another target than `flops_budget` / `latency_budget_ms` (the trackers' corrected ones); they are
    clipped into the reachable range. `costs`: the learned time cost of each exit; the latency settings act only
    once it is warm. A time budget below exit 1's cost raises BudgetError when `refuse_unmet` (a change being
    set), else it runs exit 1 and says so in `latency_note` (costs that rose after the budget was set).
    Raises BudgetError with a human-readable reason when anything is wrong.
    """
    s = replace(current, **_typed_changes(changes))
    g = np.asarray(exit_gflops, dtype=np.float64)
    n = len(g)
    if not 0 <= s.max_exit <= n:
        raise BudgetError(f"max_exit must be 0 (all exits) or 1..{n} (the exits this model has), got {s.max_exit}")
    cap = s.max_exit or n
    try:
        get_criterion(s.criterion)
    except ValueError as exc:
        raise BudgetError(str(exc)) from None
    lo, hi = solver.budget_range(g, cap)
    if s.flops_budget > 0 and not lo <= s.flops_budget <= hi:
        which = "cheapest exit (exit 1)" if s.flops_budget < lo else f"highest allowed exit (exit {cap})"
        hint = "raise max_exit or lower flops_budget" if s.flops_budget > lo else "raise flops_budget"
        raise BudgetError(f"flops_budget {s.flops_budget:g} GFLOPs is beyond the {which}: exits 1..{cap} can "
                          f"average {lo:.4g}..{hi:.4g} GFLOPs; {hint}, or set 0 for no average budget")
    warm = costs is not None and costs.warm
    notes: list[str] = []
    unmet_names: list[str] = []

    def unmet(name: str, value: float) -> None:
        reason = unmet_reason(name, value, costs, cap)
        if refuse_unmet:
            raise BudgetError(reason)
        notes.append(reason)
        unmet_names.append(name)

    cap_binding = "max_exit"
    if s.latency_cap_ms > 0 and not warm:
        notes.append(_warming("latency_cap_ms", costs))
    elif s.latency_cap_ms > 0:
        fits = costs.deepest_within(s.latency_cap_ms, cap)
        if fits == 0:
            unmet("latency_cap_ms", s.latency_cap_ms)
        if max(fits, 1) < cap:
            cap, cap_binding = max(fits, 1), "latency_cap_ms"
    if s.latency_budget_ms > 0 and not warm:
        notes.append(_warming("latency_budget_ms", costs))
    elif s.latency_budget_ms > 0 and s.latency_budget_ms < costs.exit_ms[0]:
        unmet("latency_budget_ms", s.latency_budget_ms)
    note, unmet_now = "; ".join(notes), bool(unmet_names)
    if s.mode == "thresholds":
        try:
            t = solver.check_thresholds(s.thresholds, s.max_exit or n, n)
        except ValueError as exc:
            raise BudgetError(str(exc)) from None
        return Resolved(s, t, cap, None, "thresholds", cap_binding, note, unmet_now)
    if calibration is None:
        if s.mode != "exit_ratio":
            names = " and ".join(x for x in ("flops_budget", "latency_budget_ms") if getattr(s, x) > 0)
            raise BudgetError(f"{names} needs a calibration file (parameter 'calibration'); "
                              f"give explicit thresholds or set {names} 0")
        return Resolved(s, np.full(n, solver.NEVER), cap, None, "max_exit", cap_binding, note, unmet_now)
    try:
        values = calibration.criterion_values(s.criterion)
    except ValueError as exc:
        raise BudgetError(str(exc)) from None
    if values.shape[0] != n:
        raise BudgetError(f"the calibration has {values.shape[0]} exits but the model has {n}")
    # Each budget solved on its own costs by the same solver; the tighter (the one stopping earlier) binds.
    solved: list[tuple[str, solver.Solution]] = []
    if s.flops_budget > 0:
        target = s.flops_budget if budget_override is None else budget_override
        solved.append(("flops_budget", solver.solve_budget(
            values, g, float(np.clip(target, *solver.budget_range(g, cap))), cap, calibration.solver_rule)))
    if s.latency_budget_ms > 0 and warm:
        c = np.asarray(costs.exit_ms)
        target = s.latency_budget_ms if latency_override is None else latency_override
        solved.append(("latency_budget_ms", solver.solve_budget(
            values, c, float(np.clip(target, *solver.budget_range(c, cap))), cap, calibration.solver_rule)))
    if solved:
        binding, sol = min(solved, key=lambda item: _mean_exit(item[1]))
    else:
        binding = "exit_ratio"
        sol = solver.solve_exit_ratio(values, s.exit_ratio, cap, g, calibration.solver_rule)
    return Resolved(s, sol.thresholds, cap, sol, binding, cap_binding, note, unmet_now)


def refusal(current: BudgetSettings, changes: Mapping[str, Any], exit_gflops: Sequence[float],
            calibration: Calibration | None, *, costs: CostTable | None = None,
            refuse_unmet: bool = True) -> str | None:
    """The reason `changes` would be refused, or None when they are fine (for an on-set-parameters callback)."""
    try:
        resolve_budget(current, changes, exit_gflops, calibration, costs=costs, refuse_unmet=refuse_unmet)
    except BudgetError as exc:
        return str(exc)
    return None


class StepOutcome(Protocol):
    """What the budget reads from a step it accounts (model.policy.StepResult)."""

    @property
    def exit_index(self) -> int: ...  # 1-based exit the step stopped at
    @property
    def gflops(self) -> float: ...  # LLM GFLOPs spent, at the real prompt length


# ------------------------------------------------------------------------------------------ node state
class ExitBudget:
    """The budget state of a running policy: settings, the exit controller, the trackers and the cost model.

    Use: `decider` for `DeerPolicy.step`, `check(changes)` in the on-set-parameters callback (no side effects),
    `apply(changes)` in the post-set callback, `record(step, latency_ms)` after every action, `report()` for
    diagnostics, `cost_table()` for the learned costs (an immutable snapshot, safe to hand to other threads).
    """

    def __init__(self, exit_gflops: Sequence[float], calibration: Calibration | None = None,
                 settings: BudgetSettings = BudgetSettings(), tracker_gain: float = 0.1,
                 window: int = 200, resolve_tolerance: float = 0.002, costs: CostModel | None = None) -> None:
        self.exit_gflops = np.asarray(exit_gflops, dtype=np.float64)
        self.calibration = calibration
        self.costs = costs if costs is not None else CostModel(self.exit_gflops)
        self._tracker_gain = tracker_gain
        self._tolerance = resolve_tolerance  # re-solve when a target or the costs moved by this fraction
        self.tracker: BudgetTracker | None = None  # flops
        self.latency_tracker: BudgetTracker | None = None
        self.window: deque[float] = deque(maxlen=window)  # realised GFLOPs of the latest steps
        self.latency_window: deque[float] = deque(maxlen=window)  # realised arrival->publish ms
        self.prompt_scale = 1.0  # realised / calibration GFLOPs of the same exit, latest step (see record)
        self.steps, self._total, self._latency_total, self._latency_steps = 0, 0.0, 0.0, 0
        self.decider = ExitController()
        self._install(resolve_budget(settings, {}, self.exit_gflops, calibration, refuse_unmet=False,
                                     costs=self.cost_table()))

    @classmethod
    def create(cls, exits: Sequence[Any], calibration: Calibration | None, params: Mapping[str, Any],
               **kwargs: Any) -> "ExitBudget":
        """From the policy's `exits` (ExitInfo list), a calibration (cut to those exits) and parameter values.

        With a calibration, the per-exit GFLOPs are the calibration's (averaged over its real prompts), so a
        solved budget is met on the calibration data in the GFLOPs the policy reports.
        """
        gflops = [e.gflops for e in exits]
        if calibration is not None:
            calibration = calibration.for_exits([e.layers for e in exits])
            gflops = calibration.exit_gflops  # measured at the calibration's prompts, not a typical one
        settings = resolve_budget(BudgetSettings(), {k: v for k, v in params.items() if k in FIELDS},
                                  gflops, calibration, refuse_unmet=False).settings
        return cls(gflops, calibration, settings, **kwargs)

    @property
    def settings(self) -> BudgetSettings:
        return self._resolved.settings

    @property
    def flops_budget(self) -> float:
        return self.settings.flops_budget

    @property
    def tracking(self) -> bool:
        return self.tracker is not None or self.latency_tracker is not None

    @property
    def binding(self) -> str:
        """What sets the thresholds now: thresholds, flops_budget, latency_budget_ms, exit_ratio or max_exit."""
        return self._resolved.binding

    def cost_table(self) -> CostTable:
        """The learned time costs at the current prompt (realised ms)."""
        return self.costs.table(self.prompt_scale)

    def check(self, changes: Mapping[str, Any]) -> str | None:
        return refusal(self.settings, changes, self.exit_gflops, self.calibration, costs=self.cost_table(),
                       refuse_unmet=bool(set(changes) & set(LATENCY_FIELDS)))

    def apply(self, changes: Mapping[str, Any]) -> None:
        """Switch to the changed settings (BudgetError, and nothing changes, if they are refused). A time budget
        the costs cannot meet is not refused here (it was checked when set): it runs exit 1 and says so."""
        self._install(self._resolve(changes))

    def _resolve(self, changes: Mapping[str, Any] | None = None, flops_target: float | None = None,
                 latency_target: float | None = None) -> Resolved:
        return resolve_budget(self.settings, changes or {},
                              self.exit_gflops, self.calibration, flops_target, costs=self.cost_table(),
                              latency_override=latency_target, refuse_unmet=False)

    def _install(self, resolved: Resolved) -> None:
        s = resolved.settings
        tracked = s.budget_tracking and s.mode != "thresholds" and self.calibration is not None
        if tracked and s.flops_budget > 0:
            lo, hi = (x * self.prompt_scale for x in solver.budget_range(self.exit_gflops, resolved.max_exit))
            if self.tracker is None:
                self.tracker = BudgetTracker(s.flops_budget, lo, hi, self._tracker_gain)
            else:  # keeps the learned correction
                self.tracker.set_budget(s.flops_budget)
                self.tracker.set_limits(lo, hi)
        else:
            self.tracker = None
        if tracked and s.latency_budget_ms > 0:
            if self.latency_tracker is not None:
                self.latency_tracker.set_budget(s.latency_budget_ms)
        else:
            self.latency_tracker = None
        self._resolved = resolved
        self._solved = (s.flops_budget, s.latency_budget_ms, self.cost_table().exit_ms)
        self.window.clear()
        self.latency_window.clear()
        self.steps, self._total, self._latency_total, self._latency_steps = 0, 0.0, 0.0, 0
        self.decider.configure(s.criterion, resolved.thresholds, resolved.max_exit)
        self._retarget()

    def _latency_limits(self, cap: int) -> tuple[float, float]:
        return solver.budget_range(np.asarray(self.cost_table().exit_ms), cap)

    def _retarget(self) -> None:
        """Re-solve when a tracker's target or the learned costs moved by more than the tolerance."""
        s = self.settings
        if self.tracker is not None:
            lo, hi = solver.budget_range(self.exit_gflops, self._resolved.max_exit)
            flops = float(np.clip(self.tracker.target / self.prompt_scale, lo, hi))
        else:
            flops = s.flops_budget
        costs = self.cost_table()
        latency = s.latency_budget_ms
        if (self.latency_tracker is None and s.latency_budget_ms > 0 and s.budget_tracking and costs.warm
                and s.mode != "thresholds" and self.calibration is not None):
            self.latency_tracker = BudgetTracker(s.latency_budget_ms, *self._latency_limits(self._resolved.max_exit),
                                                 self._tracker_gain)
        if self.latency_tracker is not None and costs.warm:
            latency = self.latency_tracker.target
        key = (flops, latency, costs.exit_ms)
        if not self._moved(key):
            return
        self._resolved = self._resolve({}, flops if self.tracker is not None else None,
                                       latency if self.latency_tracker is not None else None)
        self._solved = key
        self.decider.configure(s.criterion, self._resolved.thresholds, self._resolved.max_exit)

    def _moved(self, key: tuple[float, float, tuple[float, ...]]) -> bool:
        (f0, l0, c0), (f1, l1, c1) = self._solved, key
        tol, s = self._tolerance, self.settings
        if abs(f1 - f0) > tol * max(s.flops_budget, 1e-12) or abs(l1 - l0) > tol * max(l0, 1e-12):
            return True
        if not (s.latency_budget_ms > 0 or s.latency_cap_ms > 0):
            return False  # the costs set nothing
        a, b = np.asarray(c0), np.asarray(c1)
        if np.isnan(a).any() != np.isnan(b).any():
            return True  # the first costs arrived
        return bool(not np.isnan(b).any() and np.any(np.abs(b - a) > tol * np.abs(a)))

    def record(self, step: StepOutcome, latency_ms: float | None = None) -> None:
        """Account one action (a step decided by `decider`): its exit and GFLOPs, and, when `latency_ms` (its
        arrival->publish time) is given, its timings for the cost model (`step` is then a costs.TimedStep).
        With tracking, the binding budget's tracker corrects the thresholds for the next step.

        Two GFLOPs corrections: the tracker's integral one, and a feed-forward one for the instruction's length:
        an exit costs more with a longer prompt, so the step's cost over the calibration's cost of the same exit
        (`prompt_scale`) converts the realised-GFLOPs target into the calibration's GFLOPs at once when the
        instruction changes; the cost model scales the LLM part of each exit's time by it too.
        """
        gflops, exit_index = float(step.gflops), int(step.exit_index)
        self.window.append(gflops)
        self.steps += 1
        self._total += gflops
        if 1 <= exit_index <= len(self.exit_gflops) and gflops > 0:
            self.prompt_scale = gflops / float(self.exit_gflops[exit_index - 1])
        if latency_ms is not None:
            timed: TimedStep = step  # type: ignore[assignment] - the caller passes a timed step with a latency
            self.costs.record(timed, float(latency_ms))
            self.latency_window.append(float(latency_ms))
            self._latency_total += float(latency_ms)
            self._latency_steps += 1
        binding, cap = self._resolved.binding, self._resolved.max_exit
        if self.tracker is not None and binding == "flops_budget":
            lo, hi = solver.budget_range(self.exit_gflops, cap)
            self.tracker.set_limits(lo * self.prompt_scale, hi * self.prompt_scale)
            self.tracker.record(gflops)
        if self.latency_tracker is not None and binding == "latency_budget_ms" and latency_ms is not None:
            self.latency_tracker.set_limits(*self._latency_limits(cap))
            self.latency_tracker.record(float(latency_ms))
        self._retarget()

    def report(self) -> dict[str, str]:
        """Diagnostics key/values: requested vs realised GFLOPs and ms, what binds, the learned cost table."""
        s, r = self.settings, self._resolved
        out = {"budget_mode": s.mode, "budget_binding": r.binding, "cap_binding": r.cap_binding,
               "flops_budget": f"{s.flops_budget:.4g}", "max_exit": str(r.max_exit),
               "criterion": s.criterion, "budget_tracking": str(self.tracking).lower(),
               "thresholds": " ".join(f"{t:.4g}" for t in r.thresholds[: r.max_exit - 1])}
        costs = self.cost_table()
        if r.solution is not None:
            fractions = r.solution.exit_fractions
            out["calibration_gflops"] = f"{fractions @ self.exit_gflops:.4g}"
            out["exit_ratio_solved"] = f"{r.solution.exit_ratio:.4g}"
            if costs.warm:
                out["calibration_latency_ms"] = f"{fractions @ np.asarray(costs.exit_ms):.4g}"
        if self.tracker is not None:
            out["flops_target"] = f"{self.tracker.target:.4g}"
            out["flops_target_calibration"] = f"{self._solved[0]:.4g}"
            out["prompt_cost_scale"] = f"{self.prompt_scale:.3g}"
        out.update({"flops_realised_window": f"{self.realised_window:.4g}",
                    "flops_realised_total": f"{self.realised_total:.4g}", "flops_steps": str(self.steps)})
        out["latency_budget_ms"] = f"{s.latency_budget_ms:.4g}"
        out["latency_cap_ms"] = f"{s.latency_cap_ms:.4g}"
        if self.latency_tracker is not None:
            out["latency_target_ms"] = f"{self.latency_tracker.target:.4g}"
        if self._latency_steps:
            out["latency_realised_window_ms"] = f"{np.mean(self.latency_window):.4g}"
            out["latency_realised_total_ms"] = f"{self._latency_total / self._latency_steps:.4g}"
        if r.latency_note:
            out["latency_note"] = r.latency_note
        out.update(costs.report())
        return out

    @property
    def latency_note(self) -> str:
        """Why a latency setting is not (fully) in force now ('' when it is, or none is set)."""
        return self._resolved.latency_note

    @property
    def latency_unmet(self) -> bool:
        """Whether a latency setting in force is below what the learned costs allow (exit 1 runs meanwhile)."""
        return self._resolved.latency_unmet

    @property
    def realised_window(self) -> float:
        """Mean realised GFLOPs over the latest `window` actions (nan before the first)."""
        return float(np.mean(self.window)) if self.window else float("nan")

    @property
    def realised_total(self) -> float:
        """Mean realised GFLOPs since the settings last changed (nan before the first action)."""
        return self._total / self.steps if self.steps else float("nan")

    @property
    def realised_latency_window(self) -> float:
        """Mean arrival->publish ms over the latest `window` timed actions (nan before the first)."""
        return float(np.mean(self.latency_window)) if self.latency_window else float("nan")

    def describe(self) -> str:
        s, r = self.settings, self._resolved
        parts = []
        if s.flops_budget > 0:
            parts.append(f"flops_budget {s.flops_budget:g} GFLOPs")
        if s.latency_budget_ms > 0:
            parts.append(f"latency_budget_ms {s.latency_budget_ms:g}")
        rule = {"thresholds": "explicit thresholds", "exit_ratio": f"exit_ratio {s.exit_ratio:g}"}.get(
            s.mode, " and ".join(parts) + (" (tracked)" if s.budget_tracking else ""))
        if s.mode != "thresholds" and self.calibration is None:
            rule = "no calibration: run to the cap"
        cap = f", latency_cap_ms {s.latency_cap_ms:g}" if s.latency_cap_ms else ""
        return f"{rule}, criterion {s.criterion}, max exit {r.max_exit}{cap}, binding: {r.binding}"
