"""Budget tracking: keep the realised average cost at the requested budget on data the calibration never saw.

The cost is LLM GFLOPs for flops_budget and arrival->publish milliseconds for latency_budget_ms: one tracker
each, the same rule. Thresholds solved on calibration data meet the budget there, but the robot's world
(scenes, instructions, prompt lengths) shifts the criterion values, and the learned time costs are medians, not
means, so the realised average drifts. The tracker closes the loop with an integral controller on the budget
handed to the solver:

    c  <- c + gain * (budget - realised cost of this step) / budget        (relative correction)
    target = clip(budget * (1 + c), cheapest exit, cap exit)               (re-solved by the caller)

The correction c is the accumulated relative error, so the running mean error is -c / (gain * steps): it shrinks
as 1/steps once c has settled on the offset the new data needs. Clipping c together with the target (anti
wind-up) keeps it from growing while the solver cannot go further. c is relative to the budget, so it carries
over when the budget changes.
"""
from __future__ import annotations

import numpy as np


class BudgetTracker:
    """Integral correction of the budget handed to the solver, from each step's realised cost (GFLOPs or ms)."""

    def __init__(self, budget: float, lo: float, hi: float, gain: float = 0.1) -> None:
        if not gain > 0:
            raise ValueError(f"tracker gain must be > 0, got {gain}")
        self.gain = float(gain)
        self.correction = 0.0  # relative: target = budget * (1 + correction)
        self.lo, self.hi = float(lo), float(hi)
        self.set_budget(budget)
        self.set_limits(lo, hi)

    def set_budget(self, budget: float) -> None:
        """A new budget (> 0); the learned relative correction is kept."""
        if not (np.isfinite(budget) and budget > 0):
            raise ValueError(f"budget must be a positive number, got {budget}")
        self.budget = float(budget)
        self._clip()

    def set_limits(self, lo: float, hi: float) -> None:
        """The range [lo, hi] the target can usefully take (what the cheapest and the deepest allowed exit cost
        now); the correction stops growing at its ends (anti wind-up)."""
        if not (np.isfinite(lo) and np.isfinite(hi) and 0 < lo <= hi):
            raise ValueError(f"tracker limits must satisfy 0 < lo <= hi, got [{lo}, {hi}]")
        self.lo, self.hi = float(lo), float(hi)
        self._clip()

    @property
    def target(self) -> float:
        """The budget to hand to the solver (realised units)."""
        return self.budget * (1.0 + self.correction)

    def record(self, cost: float) -> float:
        """Account one step's realised cost; return the new target."""
        if not np.isfinite(cost) or cost < 0:
            raise ValueError(f"realised cost must be a finite number >= 0, got {cost}")
        self.correction += self.gain * (self.budget - cost) / self.budget
        self._clip()
        return self.target

    def _clip(self) -> None:
        self.correction = float(np.clip(self.correction, self.lo / self.budget - 1.0, self.hi / self.budget - 1.0))
