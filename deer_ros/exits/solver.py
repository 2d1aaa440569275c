"""Threshold solver: calibration values + a budget -> one threshold per exit. Pure NumPy.

Conventions
- `values` is (n_exits, N): the criterion value of every built exit on N calibration samples (row k = exit k+1).
- Exit positions are 0-based array indices here (exit position p is the `ExitInfo.index` p + 1).
- A sample stops at the first exit p with values[p] <= thresholds[p]; the last allowed exit always stops.
- Criterion values are >= 0, so `NEVER` (-1) disables an exit; `ALWAYS` (1e8, the reference's dummy) marks
  the forced last exit and the exits past the cap.

Solvers
- `solve_exit_ratio`: the reference's geometric exit-rate targets (deer-reference 2.4): exit k gets a share
  p_k proportional to r**k of the calibration samples; walking the exits in order, each threshold is the value
  that lets exactly that many of the samples still running stop there.
- `solve_budget`: the exit_ratio that makes the average GFLOPs on the calibration data meet a budget. The
  calibration cost of a given r follows from the exit counts alone (no pass over the values), so r is found by
  bisection on a 6-number function and the values are sorted once, for the final thresholds.
Counting rules (`counting`): how the target shares become whole samples per exit.
- "cumulative" (ours, the default): counts rounded from the cumulative shares (they sum to N). It keeps the
  realised rates within one sample of the targets and makes the cost monotone in r, so a bigger budget never
  runs fewer layers.
- "floor" (the reference's): floor(N * p_k) per exit with p in float32; the remainder stops at the last exit.
`skip_first_exit` (the reference's rule for the 9B model): exit 1's share is set to 0 and the other shares are
renormalised to sum to 1 before counting, as the reference's set_threshold does (robot_flamingo/models/
value_net.py: `probs[0] = 0` for mpt_9b, then `probs /= probs.sum()`). `SolverRule` bundles the two;
`SolverRule.reference(preset)` is the reference's choice for a released model.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NEVER = -1.0
ALWAYS = 1e8
_LOG_R_RANGE = 60.0  # |log r| beyond which the geometric shares are all on one exit in float64
COUNTING_RULES = ("cumulative", "floor")


@dataclass(frozen=True)
class SolverRule:
    """How shares become per-exit sample counts (see the module docstring)."""

    counting: str = "cumulative"
    skip_first_exit: bool = False

    def __post_init__(self) -> None:
        if self.counting not in COUNTING_RULES:
            raise ValueError(f"counting must be one of {', '.join(COUNTING_RULES)}, got {self.counting!r}")

    @classmethod
    def reference(cls, model: str) -> "SolverRule":
        """The reference solver's rule for a released model: floor counting, and no first exit for the 9B."""
        return cls("floor", skip_first_exit=model == "of9b")

    def to_dict(self) -> dict:
        return {"counting": self.counting, "skip_first_exit": self.skip_first_exit}


OURS = SolverRule()


@dataclass(frozen=True)
class Solution:
    """Thresholds and what they do on the calibration data they were solved on."""

    thresholds: np.ndarray  # (n_exits,)
    max_exit: int  # 1-based highest allowed exit (the forced one)
    exit_ratio: float  # geometric exit-rate parameter that produced them
    exit_fractions: np.ndarray  # (n_exits,) share of calibration samples stopping at each exit
    gflops: float  # average GFLOPs on the calibration data (nan when no costs were given)


# --------------------------------------------------------------------------- checks
def check_values(values: np.ndarray) -> np.ndarray:
    """`values` as a float64 (n_exits, N) array with N >= 1 and no NaN/Inf, or ValueError."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2 or v.shape[0] < 1 or v.shape[1] < 1:
        raise ValueError(f"calibration values must be a 2-D (n_exits, n_samples) array, got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError("calibration values contain NaN or Inf; re-run the calibration with a healthy model")
    return v


def resolve_max_exit(max_exit: int | None, n_exits: int) -> int:
    """The 1-based cap in force: None or 0 = all exits; otherwise 1..n_exits, else ValueError."""
    if max_exit is None or max_exit == 0:
        return n_exits
    if not 1 <= int(max_exit) <= n_exits:
        raise ValueError(f"max_exit must be 0 (all exits) or 1..{n_exits}, got {max_exit}")
    return int(max_exit)


def check_gflops(exit_gflops: np.ndarray, n_exits: int) -> np.ndarray:
    g = np.asarray(exit_gflops, dtype=np.float64).reshape(-1)
    if g.shape != (n_exits,):
        raise ValueError(f"exit_gflops must have one value per exit ({n_exits}), got {g.shape[0]}")
    if not np.all(np.isfinite(g)) or np.any(g <= 0) or np.any(np.diff(g) <= 0):
        raise ValueError(f"exit_gflops must be positive and increasing with the exit, got {g.tolist()}")
    return g


# --------------------------------------------------------------------------- simulation
def simulate(values: np.ndarray, thresholds: np.ndarray, max_exit: int | None = None) -> np.ndarray:
    """0-based exit position of every sample: (N,) int64."""
    v = np.asarray(values)
    cap = resolve_max_exit(max_exit, v.shape[0])
    t = np.asarray(thresholds, dtype=np.float64)[: cap - 1, None]  # (cap-1, 1); the cap itself always stops
    if cap == 1:
        return np.zeros(v.shape[1], dtype=np.int64)
    stop = v[: cap - 1] <= t  # (cap-1, N)
    # first stopping row per column, as a row-wise minimum (much faster than argmax along axis 0)
    pos = np.where(stop, np.arange(cap - 1, dtype=np.int16)[:, None], np.int16(cap - 1)).min(axis=0)
    return pos.astype(np.int64)


def average_gflops(exit_pos: np.ndarray, exit_gflops: np.ndarray) -> float:
    return float(np.asarray(exit_gflops, dtype=np.float64)[exit_pos].mean())


def exit_fractions(exit_pos: np.ndarray, n_exits: int) -> np.ndarray:
    return np.bincount(exit_pos, minlength=n_exits)[:n_exits] / max(len(exit_pos), 1)


# --------------------------------------------------------------------------- exit_ratio
def exit_shares(exit_ratio: float, n: int) -> np.ndarray:
    """Geometric target shares p_k proportional to exit_ratio**k over n exits (k = 1..n), summing to 1."""
    if not (np.isfinite(exit_ratio) and exit_ratio > 0):
        raise ValueError(f"exit_ratio must be a positive number, got {exit_ratio}")
    return _shares_from_log(float(np.log(exit_ratio)), n)


def _shares_from_log(log_r: float, n: int) -> np.ndarray:
    logits = log_r * np.arange(1, n + 1)
    w = np.exp(logits - logits.max())  # shifted so r**k neither overflows nor underflows to all zeros
    return w / w.sum()


def exit_counts(shares: np.ndarray, n_samples: int, rule: SolverRule = OURS) -> np.ndarray:
    """Integer samples per exit, summing to n_samples, by `rule` (the last exit takes what is left)."""
    shares = np.asarray(shares, dtype=np.float64).copy()
    if rule.skip_first_exit and len(shares) > 1:
        shares[0] = 0.0
        shares /= shares.sum()
    if rule.counting == "floor":
        counts = np.floor(np.float32(n_samples) * shares.astype(np.float32)).astype(np.int64)
        counts[-1] = 0
        counts[-1] = n_samples - counts.sum()
        return counts
    cum = np.rint(np.cumsum(shares) * n_samples).astype(np.int64)
    cum[-1] = n_samples
    return np.diff(cum, prepend=0)


def thresholds_for_counts(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Thresholds under which exit k stops counts[k] of the samples still running there (no ties assumed).

    `counts` covers the allowed exits (len = cap); the cap's own threshold and those past it are ALWAYS. An exit
    that stops none of its samples gets NEVER and one that stops all of them ALWAYS, so the extreme budgets
    stay extreme on data the calibration never saw.
    """
    v = np.asarray(values, dtype=np.float64)
    cap = len(counts)
    thresholds = np.full(v.shape[0], ALWAYS)
    running = np.ones(v.shape[1], dtype=bool)
    for k in range(cap - 1):
        m = int(counts[k])
        row = v[k].compress(running)  # compress: several times faster than boolean indexing
        if m <= 0 or row.size == 0:
            thresholds[k] = NEVER
            continue
        if m >= row.size:
            # every running sample stops here: say "always", so that unseen data with larger values stops too
            thresholds[k] = ALWAYS
            running[:] = False
            continue
        thresholds[k] = np.partition(row, m - 1)[m - 1]  # the m-th smallest value of the running samples
        running &= v[k] > thresholds[k]
    return thresholds


def _solution(v: np.ndarray, thresholds: np.ndarray, cap: int, log_r: float,
              exit_gflops: np.ndarray | None) -> Solution:
    pos = simulate(v, thresholds, cap)
    gflops = average_gflops(pos, exit_gflops) if exit_gflops is not None else float("nan")
    return Solution(thresholds, cap, float(np.exp(log_r)), exit_fractions(pos, v.shape[0]), gflops)


def solve_exit_ratio(values: np.ndarray, exit_ratio: float, max_exit: int | None = None,
                     exit_gflops: np.ndarray | None = None, rule: SolverRule = OURS) -> Solution:
    """Thresholds for the reference's geometric exit-rate targets (r < 1 favours early exits, 1 = uniform)."""
    v = check_values(values)
    cap = resolve_max_exit(max_exit, v.shape[0])
    g = None if exit_gflops is None else check_gflops(exit_gflops, v.shape[0])
    counts = exit_counts(exit_shares(exit_ratio, cap), v.shape[1], rule)
    return _solution(v, thresholds_for_counts(v, counts), cap, float(np.log(exit_ratio)), g)


# --------------------------------------------------------------------------- average budget
def budget_range(exit_gflops: np.ndarray, max_exit: int | None = None) -> tuple[float, float]:
    """Smallest and largest average GFLOPs reachable under the cap: every sample at exit 1 / at the cap."""
    g = np.asarray(exit_gflops, dtype=np.float64)
    return float(g[0]), float(g[resolve_max_exit(max_exit, len(g)) - 1])


def solve_budget(values: np.ndarray, exit_gflops: np.ndarray, budget: float,
                 max_exit: int | None = None, rule: SolverRule = OURS) -> Solution:
    """Thresholds whose average GFLOPs on the calibration data is as close to `budget` as the samples allow.

    The attainable averages are spaced (g_cap - g_1) / N apart, so the result is within half that of the
    budget (ties in the values aside). ValueError when the budget is outside `budget_range`.
    """
    v = check_values(values)
    g = check_gflops(exit_gflops, v.shape[0])
    cap = resolve_max_exit(max_exit, v.shape[0])
    lo_cost, hi_cost = budget_range(g, cap)
    if not np.isfinite(budget) or not lo_cost - 1e-9 <= budget <= hi_cost + 1e-9:
        raise ValueError(f"flops_budget {budget} GFLOPs is outside what exits 1..{cap} can average: "
                         f"[{lo_cost:.4g}, {hi_cost:.4g}]")
    n = v.shape[1]

    def cost(log_r: float) -> tuple[float, np.ndarray]:
        counts = exit_counts(_shares_from_log(log_r, cap), n, rule)
        return float(counts @ g[:cap]) / n, counts

    # cost(log r) is non-decreasing: bisect for the step where it crosses the budget, keep the closer side.
    lo, hi = -_LOG_R_RANGE, _LOG_R_RANGE
    for _ in range(52):  # 2**-52 of the log-r range: far below one sample's step
        mid = 0.5 * (lo + hi)
        if cost(mid)[0] <= budget:
            lo = mid
        else:
            hi = mid
    (c_lo, n_lo), (c_hi, n_hi) = cost(lo), cost(hi)
    log_r, counts = (lo, n_lo) if abs(c_lo - budget) <= abs(c_hi - budget) else (hi, n_hi)
    return _solution(v, thresholds_for_counts(v, counts), cap, log_r, g)


def check_thresholds(thresholds, n_allowed: int, n_exits: int) -> np.ndarray:
    """Explicit thresholds as a (n_exits,) array: one per allowed exit or one per built exit, all finite.

    ValueError with what is wrong otherwise. Missing entries past the cap are filled with ALWAYS.
    """
    try:
        t = np.asarray(list(thresholds), dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"thresholds must be a list of numbers, got {thresholds!r}") from None
    if t.ndim != 1 or len(t) not in (n_allowed, n_exits):
        counts = f"{n_allowed}" if n_allowed == n_exits else f"{n_allowed} (allowed exits) or {n_exits} (built)"
        raise ValueError(f"thresholds must have {counts} values, one per exit, got {t.size}")
    if np.any(np.isnan(t)):
        raise ValueError("thresholds contain NaN")
    if np.any(np.isinf(t)):
        raise ValueError(f"thresholds must be finite (use {NEVER} to disable an exit, {ALWAYS:g} to always stop)")
    out = np.full(n_exits, ALWAYS)
    out[: len(t)] = t
    return out
