"""The solver's counting rules against hand-computed cases: ours (cumulative rounding) and the reference's
(floor of N * p per exit in float32, the remainder to the last exit; no first exit for the 9B model)."""
from __future__ import annotations

import numpy as np
import pytest

from deer_ros.exits.solver import OURS, SolverRule, exit_counts, simulate, solve_exit_ratio

FLOOR = SolverRule("floor")


def test_floor_counts_by_hand():
    # N = 10, uniform over 3 exits: 10/3 = 3.33 -> 3, 3, remainder 4 (cumulative rounding gives 3, 4, 3)
    shares = np.full(3, 1 / 3)
    assert exit_counts(shares, 10, FLOOR).tolist() == [3, 3, 4]
    assert exit_counts(shares, 10, OURS).tolist() == [3, 4, 3]
    # r = 0.5 over 3 exits: p = 4/7, 2/7, 1/7; N = 20: 11.43 -> 11, 5.71 -> 5, remainder 4
    shares = np.array([4, 2, 1]) / 7
    assert exit_counts(shares, 20, FLOOR).tolist() == [11, 5, 4]
    assert exit_counts(shares, 20, OURS).tolist() == [11, 6, 3]


def test_floor_is_taken_in_float32():
    # 100 * 0.58 is 57.99999999999999 in float64 (floor 57) but 58.0 in float32, as the reference computes it
    assert exit_counts(np.array([0.58, 0.42]), 100, FLOOR).tolist() == [58, 42]


def test_skip_first_exit_spreads_its_share_over_the_other_exits():
    rule = SolverRule("floor", skip_first_exit=True)
    # uniform over 4 exits, N = 12: exit 1 forced to 0, the rest renormalised to 1/3 each as the reference does
    # (probs[0] = 0, then probs /= probs.sum()): 4, 4, remainder 4 (without renormalising: 3, 3, 6)
    assert exit_counts(np.full(4, 0.25), 12, rule).tolist() == [0, 4, 4, 4]
    # r = 0.5 over 3 exits, N = 30: p = 0, 2/3, 1/3 -> 0, 20, remainder 10
    assert exit_counts(np.array([4, 2, 1]) / 7, 30, rule).tolist() == [0, 20, 10]
    assert SolverRule.reference("of9b") == rule and SolverRule.reference("of3b") == FLOOR


def test_thresholds_follow_the_counts_walking_the_exits():
    # 3 exits, 10 samples with distinct values; uniform shares.
    values = np.array([[0.1, 0.9, 0.2, 0.8, 0.3, 0.7, 0.4, 0.6, 0.5, 0.05],
                       [0.5, 0.4, 0.3, 0.2, 0.1, 0.9, 0.8, 0.7, 0.6, 0.55],
                       np.zeros(10)])
    sol = solve_exit_ratio(values, 1.0, rule=FLOOR)
    # exit 1 stops the 3 smallest of row 0: 0.05, 0.1, 0.2 -> threshold 0.2 (samples 9, 0, 2)
    # exit 2 stops 3 of the remaining 7 (1, 3, 4, 5, 6, 7, 8 with row-1 values .4 .2 .1 .9 .8 .7 .6) -> .1 .2 .4
    assert sol.thresholds[0] == pytest.approx(0.2) and sol.thresholds[1] == pytest.approx(0.4)
    pos = simulate(values, sol.thresholds)
    assert np.bincount(pos, minlength=3).tolist() == [3, 3, 4]
    assert pos[[9, 0, 2]].tolist() == [0, 0, 0] and pos[[4, 3, 1]].tolist() == [1, 1, 1]


def test_unknown_counting_rule_is_refused():
    with pytest.raises(ValueError, match="counting must be one of cumulative, floor"):
        SolverRule("nearest")
