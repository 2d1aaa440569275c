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
from typing import Any, Mapping, Sequence

import numpy as np

from deer_ros.exits import solver
from deer_ros.exits.calibration import Calibration
from deer_ros.exits.criteria import DEFAULT_CRITERION, Criterion, get_criterion
from deer_ros.exits.tracking import BudgetTracker


class BudgetError(ValueError):
    """A budget setting that is refused; the message is the reason."""


class FixedExit:
    """Decider that stops at exit `k` (1-based); a policy built with fewer exits stops at its last one."""

    def __init__(self, k: int) -> None:
        if isinstance(k, bool) or not isinstance(k, Integral) or k < 1:
            raise ValueError(f"FixedExit needs a 1-based exit index >= 1, got {k!r}")
        self.k = int(k)

    def __call__(self, candidate: Any) -> bool:
        return candidate.index >= self.k

    def __repr__(self) -> str:
        return f"FixedExit({self.k})"


class ExitController:
    """DeeR exit rule as an ExitDecider: stop at the first exit whose criterion value is <= its threshold.

    `thresholds` has one entry per built exit (index - 1); `max_exit` (1-based, 0/None = none) forces a stop
    there. `values` holds the criterion values seen during the latest step, one per examined exit.
    """

    def __init__(self, criterion: str | Criterion = DEFAULT_CRITERION, thresholds: Sequence[float] = (),
                 max_exit: int | None = None) -> None:
        self.values: list[float] = []
        self.configure(criterion, thresholds, max_exit)

    def configure(self, criterion: str | Criterion, thresholds: Sequence[float], max_exit: int | None) -> None:
        fn = get_criterion(criterion) if isinstance(criterion, str) else criterion
        t = np.asarray(thresholds, dtype=np.float64).reshape(-1)
        if np.any(np.isnan(t)):
            raise ValueError("thresholds contain NaN")
        self.criterion, self.thresholds, self.max_exit = fn, t, int(max_exit or 0)

    def __call__(self, candidate: Any) -> bool:
        if candidate.index <= 1:
            self.values = []  # a new control step
        value = float(self.criterion(candidate))
        self.values.append(value)
        candidate.value = value  # DeerPolicy copies it into StepResult.values
        position = candidate.index - 1
        if self.max_exit and candidate.index >= self.max_exit:
            return True
        # exits past the thresholds given stop: the caller solved thresholds for fewer exits than were built
        return position >= len(self.thresholds) or bool(value <= self.thresholds[position])


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

    @property
    def mode(self) -> str:
        """Which rule sets the thresholds: 'thresholds', 'flops_budget' or 'exit_ratio'."""
        if self.thresholds:
            return "thresholds"
        return "flops_budget" if self.flops_budget > 0 else "exit_ratio"


FIELDS = tuple(BudgetSettings.__dataclass_fields__)


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


def resolve_budget(current: BudgetSettings, changes: Mapping[str, Any], exit_gflops: Sequence[float],
                   calibration: Calibration | None, budget_override: float | None = None) -> Resolved:
    """Apply `changes` to `current`, validate the result and solve its thresholds. No side effects.

    `exit_gflops`: the cumulative GFLOPs of the model's built exits. `budget_override` solves for another
    target than `flops_budget` (the tracker's corrected one); it is clipped into the reachable range.
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
    if s.mode == "thresholds":
        try:
            t = solver.check_thresholds(s.thresholds, cap, n)
        except ValueError as exc:
            raise BudgetError(str(exc)) from None
        return Resolved(s, t, cap, None)
    if calibration is None:
        if s.mode == "flops_budget":
            raise BudgetError("flops_budget needs a calibration file (parameter 'calibration'); "
                              "give explicit thresholds or set flops_budget 0")
        return Resolved(s, np.full(n, solver.NEVER), cap, None)  # no calibration: run to the cap
    try:
        values = calibration.criterion_values(s.criterion)
    except ValueError as exc:
        raise BudgetError(str(exc)) from None
    if values.shape[0] != n:
        raise BudgetError(f"the calibration has {values.shape[0]} exits but the model has {n}")
    if s.mode == "flops_budget":
        target = s.flops_budget if budget_override is None else float(np.clip(budget_override, lo, hi))
        sol = solver.solve_budget(values, g, target, cap, calibration.solver_rule)
    else:
        sol = solver.solve_exit_ratio(values, s.exit_ratio, cap, g, calibration.solver_rule)
    return Resolved(s, sol.thresholds, cap, sol)


def refusal(current: BudgetSettings, changes: Mapping[str, Any], exit_gflops: Sequence[float],
            calibration: Calibration | None) -> str | None:
    """The reason `changes` would be refused, or None when they are fine (for an on-set-parameters callback)."""
    try:
        resolve_budget(current, changes, exit_gflops, calibration)
    except BudgetError as exc:
        return str(exc)
    return None


# ------------------------------------------------------------------------------------------ node state
class ExitBudget:
    """The budget state of a running policy: settings, the exit controller and the budget tracker.

    Use: `decider` for `DeerPolicy.step`, `check(changes)` in the on-set-parameters callback (no side effects),
    `apply(changes)` in the post-set callback, `record(gflops)` after every action, `report()` for diagnostics.
    """

    def __init__(self, exit_gflops: Sequence[float], calibration: Calibration | None = None,
                 settings: BudgetSettings = BudgetSettings(), tracker_gain: float = 0.1,
                 window: int = 200, resolve_tolerance: float = 0.002) -> None:
        self.exit_gflops = np.asarray(exit_gflops, dtype=np.float64)
        self.calibration = calibration
        self._tracker_gain = tracker_gain
        self._tolerance = resolve_tolerance  # re-solve when the tracked target moved by this fraction
        self.tracker: BudgetTracker | None = None
        self.window: deque[float] = deque(maxlen=window)  # realised GFLOPs of the latest steps
        self.prompt_scale = 1.0  # realised / calibration GFLOPs of the same exit, latest step (see record)
        self.steps, self._total = 0, 0.0  # since the settings last changed
        self.decider = ExitController()
        self._install(resolve_budget(settings, {}, self.exit_gflops, calibration))

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
                                  gflops, calibration).settings
        return cls(gflops, calibration, settings, **kwargs)

    @property
    def settings(self) -> BudgetSettings:
        return self._resolved.settings

    @property
    def flops_budget(self) -> float:
        return self.settings.flops_budget

    @property
    def tracking(self) -> bool:
        return self.tracker is not None

    def check(self, changes: Mapping[str, Any]) -> str | None:
        return refusal(self.settings, changes, self.exit_gflops, self.calibration)

    def apply(self, changes: Mapping[str, Any]) -> None:
        """Switch to the changed settings (BudgetError, and nothing changes, if they are refused)."""
        self._install(resolve_budget(self.settings, changes, self.exit_gflops, self.calibration))

    def _install(self, resolved: Resolved) -> None:
        s = resolved.settings
        if s.mode == "flops_budget" and s.budget_tracking:
            lo, hi = solver.budget_range(self.exit_gflops, resolved.max_exit)
            lo, hi = lo * self.prompt_scale, hi * self.prompt_scale  # in realised GFLOPs at the current prompt
            if self.tracker is None:
                self.tracker = BudgetTracker(s.flops_budget, lo, hi, self._tracker_gain)
            else:  # keeps the learned correction
                self.tracker.set_budget(s.flops_budget)
                self.tracker.set_limits(lo, hi)
        else:
            self.tracker = None
        self._resolved = resolved
        self._solved_target = s.flops_budget
        self.window.clear()
        self.steps, self._total = 0, 0.0
        self.decider.configure(s.criterion, resolved.thresholds, resolved.max_exit)
        if self.tracker is not None:
            self._retarget()

    def _retarget(self) -> None:
        """Re-solve for the tracker's target, in calibration GFLOPs, when it moved by more than the tolerance."""
        lo, hi = solver.budget_range(self.exit_gflops, self._resolved.max_exit)
        target = float(np.clip(self.tracker.target / self.prompt_scale, lo, hi))
        if abs(target - self._solved_target) > self._tolerance * self.flops_budget:
            self._resolved = resolve_budget(self.settings, {}, self.exit_gflops, self.calibration, target)
            self._solved_target = target
            self.decider.configure(self.settings.criterion, self._resolved.thresholds, self._resolved.max_exit)

    def record(self, gflops: float) -> None:
        """Account one action's realised GFLOPs (of a step decided by `decider`); with tracking, correct the
        thresholds for the next step.

        Two corrections: the tracker's integral one, and a feed-forward one for the instruction's length: an
        exit costs more with a longer prompt, so the latest step's cost over the calibration's cost of the same
        exit (`prompt_scale`) converts the realised-GFLOPs target into the calibration's GFLOPs at once when
        the instruction changes.
        """
        self.window.append(float(gflops))
        self.steps += 1
        self._total += float(gflops)
        exit_index = len(self.decider.values)  # the decider saw exits 1..k of the step just taken
        if 1 <= exit_index <= len(self.exit_gflops) and gflops > 0:
            self.prompt_scale = float(gflops) / float(self.exit_gflops[exit_index - 1])
        if self.tracker is not None:
            lo, hi = solver.budget_range(self.exit_gflops, self._resolved.max_exit)
            self.tracker.set_limits(lo * self.prompt_scale, hi * self.prompt_scale)
            self.tracker.record(gflops)
            self._retarget()

    def report(self) -> dict[str, str]:
        """Diagnostics key/values: requested vs realised GFLOPs, mode, thresholds in force."""
        s, r = self.settings, self._resolved
        out = {"budget_mode": s.mode, "flops_budget": f"{s.flops_budget:.4g}", "max_exit": str(r.max_exit),
               "criterion": s.criterion, "budget_tracking": str(self.tracking).lower(),
               "thresholds": " ".join(f"{t:.4g}" for t in r.thresholds[: r.max_exit - 1])}
        if r.solution is not None:
            out["calibration_gflops"] = f"{r.solution.gflops:.4g}"
            out["exit_ratio_solved"] = f"{r.solution.exit_ratio:.4g}"
        if self.tracker is not None:
            out["flops_target"] = f"{self.tracker.target:.4g}"
            out["flops_target_calibration"] = f"{self._solved_target:.4g}"
            out["prompt_cost_scale"] = f"{self.prompt_scale:.3g}"
        out.update({"flops_realised_window": f"{self.realised_window:.4g}",
                    "flops_realised_total": f"{self.realised_total:.4g}", "flops_steps": str(self.steps)})
        return out

    @property
    def realised_window(self) -> float:
        """Mean realised GFLOPs over the latest `window` actions (nan before the first)."""
        return float(np.mean(self.window)) if self.window else float("nan")

    @property
    def realised_total(self) -> float:
        """Mean realised GFLOPs since the settings last changed (nan before the first action)."""
        return self._total / self.steps if self.steps else float("nan")

    def describe(self) -> str:
        s, r = self.settings, self._resolved
        rule = {"thresholds": "explicit thresholds", "flops_budget": f"flops_budget {s.flops_budget:g} GFLOPs"
                + (" (tracked)" if self.tracking else ""), "exit_ratio": f"exit_ratio {s.exit_ratio:g}"}[s.mode]
        if s.mode != "thresholds" and self.calibration is None:
            rule = "no calibration: run to the cap"
        return f"{rule}, criterion {s.criterion}, max exit {r.max_exit}"
