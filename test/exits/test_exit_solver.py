"""Threshold solver: the reference's exit_ratio walk, the average-GFLOPs budget, the peak cap, and simulation."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deer_ros.exits import solver
from exits_helpers import GFLOPS_3B, synthetic_values


def brute_force_exits(values, thresholds, cap):
    """The exit rule written out sample by sample: first exit with value <= threshold, forced at the cap."""
    out = []
    for i in range(values.shape[1]):
        k = 0
        while k < cap - 1 and not values[k, i] <= thresholds[k]:
            k += 1
        out.append(k)
    return np.array(out)


@st.composite
def problems(draw, min_samples=1000, max_samples=4000):
    """A random calibration: values (n_exits, N), increasing per-exit GFLOPs, a cap."""
    n_exits = draw(st.integers(2, 8))
    n = draw(st.integers(min_samples, max_samples))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    values = synthetic_values(rng, n_exits, n, scale=draw(st.floats(0.1, 10.0)))
    steps = rng.uniform(0.5, 2.0, size=n_exits)  # per-exit cost increments within a factor 4 of each other
    gflops = np.cumsum(steps) * draw(st.floats(0.1, 10.0))
    cap = draw(st.integers(1, n_exits))
    return values, gflops, cap


# ----------------------------------------------------------------------------------------------- simulate
@settings(max_examples=40, deadline=None)
@given(problems(min_samples=1, max_samples=300), st.data())
def test_simulate_matches_the_rule_sample_by_sample_and_never_passes_the_cap(problem, data):
    values, _, cap = problem
    thresholds = np.quantile(values, data.draw(st.floats(0, 1)), axis=1) * data.draw(st.floats(0.5, 1.5))
    exits = solver.simulate(values, thresholds, cap)
    np.testing.assert_array_equal(exits, brute_force_exits(values, thresholds, cap))
    assert exits.max() <= cap - 1


def test_simulate_by_hand():
    values = np.array([[0.5, 0.1, 0.9],
                       [0.2, 0.3, 0.8],
                       [0.9, 0.9, 0.9]])
    np.testing.assert_array_equal(solver.simulate(values, [0.1, 0.3, 0.0]), [1, 0, 2])
    np.testing.assert_array_equal(solver.simulate(values, [0.1, 0.3, 0.0], max_exit=1), [0, 0, 0])
    assert solver.average_gflops(np.array([1, 0, 2]), [1.0, 2.0, 4.0]) == pytest.approx(7 / 3)


# ----------------------------------------------------------------------------------------------- exit_ratio
def test_exit_shares_follow_the_reference_geometric_targets():
    # deer-reference 2.4: r = 0.8 over 6 exits gives .271 .217 .173 .139 .111 .089
    np.testing.assert_allclose(solver.exit_shares(0.8, 6), [.271, .217, .173, .139, .111, .089], atol=6e-4)
    np.testing.assert_allclose(solver.exit_shares(1.0, 6), np.full(6, 1 / 6))
    np.testing.assert_allclose(solver.exit_shares(1.5, 6), [.048, .072, .108, .162, .244, .365], atol=6e-4)


def test_exit_ratio_walk_by_hand():
    # r = 1 over 2 allowed exits of 4 samples: 2 stop at exit 1 (the two smallest), the rest run to the cap.
    values = np.array([[0.4, 0.1, 0.3, 0.2],
                       [0.0, 0.0, 0.0, 0.0]])
    sol = solver.solve_exit_ratio(values, 1.0, exit_gflops=[1.0, 2.0])
    assert sol.thresholds[0] == pytest.approx(0.2)
    assert sol.thresholds[1] == solver.ALWAYS
    np.testing.assert_allclose(sol.exit_fractions, [0.5, 0.5])
    assert sol.gflops == pytest.approx(1.5)


def test_walk_counts_only_samples_still_running():
    # Exit 2's threshold is the m-th smallest among the samples that did not stop at exit 1.
    values = np.array([[0.1, 0.2, 0.9, 0.8, 0.7, 0.6],
                       [0.05, 0.06, 0.5, 0.4, 0.3, 0.2],
                       [0, 0, 0, 0, 0, 0]])
    t = solver.thresholds_for_counts(values, np.array([2, 2, 2]))
    assert t[0] == pytest.approx(0.2)  # samples 0, 1
    assert t[1] == pytest.approx(0.3)  # among samples 2..5: 0.2 and 0.3 (not 0.05/0.06, already stopped)
    np.testing.assert_array_equal(solver.simulate(values, t), [0, 0, 2, 2, 1, 1])


@settings(max_examples=40, deadline=None)
@given(problems(min_samples=50, max_samples=2000), st.floats(0.05, 20.0))
def test_exit_ratio_realises_its_targets_within_one_sample(problem, ratio):
    values, gflops, cap = problem
    sol = solver.solve_exit_ratio(values, ratio, cap, gflops)
    n = values.shape[1]
    target = np.zeros(values.shape[0])
    target[:cap] = solver.exit_shares(ratio, cap)
    assert np.all(np.abs(sol.exit_fractions - target) * n <= 1.0 + 1e-9)
    realised = solver.simulate(values, sol.thresholds, cap)
    assert realised.max() <= cap - 1
    assert sol.gflops == pytest.approx(solver.average_gflops(realised, gflops))


# ----------------------------------------------------------------------------------------------- budget
@settings(max_examples=60, deadline=None)
@given(problems(), st.floats(0.0, 1.0))
def test_solved_thresholds_meet_the_budget_within_2_percent_and_respect_the_cap(problem, where):
    values, gflops, cap = problem
    lo, hi = solver.budget_range(gflops, cap)
    budget = lo + where * (hi - lo)
    sol = solver.solve_budget(values, gflops, budget, cap)
    exits = solver.simulate(values, sol.thresholds, cap)
    assert exits.max() <= cap - 1
    assert abs(solver.average_gflops(exits, gflops) - budget) <= 0.02 * budget
    assert sol.gflops == pytest.approx(solver.average_gflops(exits, gflops))


@settings(max_examples=60, deadline=None)
@given(problems(min_samples=20, max_samples=2000), st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_a_bigger_budget_never_gives_fewer_layers_on_average(problem, a, b):
    values, gflops, cap = problem
    lo, hi = solver.budget_range(gflops, cap)
    small, big = sorted((lo + a * (hi - lo), lo + b * (hi - lo)))
    layers = np.arange(1, values.shape[0] + 1) * 2
    mean_layers = [layers[solver.simulate(values, solver.solve_budget(values, gflops, x, cap).thresholds, cap)].mean()
                   for x in (small, big)]
    assert mean_layers[0] <= mean_layers[1]


def test_budget_extremes_put_every_sample_on_the_first_or_the_capped_exit():
    values = synthetic_values(np.random.default_rng(1), 6, 500)
    unseen = values * 10  # data the calibration never saw, with larger values than any it holds
    first = solver.solve_budget(values, GFLOPS_3B, GFLOPS_3B[0])
    assert np.all(solver.simulate(values, first.thresholds) == 0)
    assert np.all(solver.simulate(unseen, first.thresholds) == 0)  # "everyone stops" generalises
    capped = solver.solve_budget(values, GFLOPS_3B, GFLOPS_3B[3], max_exit=4)
    assert np.all(solver.simulate(values, capped.thresholds, 4) == 3)
    assert np.all(solver.simulate(unseen / 100, capped.thresholds, 4) == 3)


@pytest.mark.parametrize("budget, cap", [(2.0, None), (16.0, None), (8.0, 2), (float("nan"), None)])
def test_unreachable_budgets_are_refused_with_the_range(budget, cap):
    values = synthetic_values(np.random.default_rng(2), 6, 100)
    with pytest.raises(ValueError, match="outside what exits"):
        solver.solve_budget(values, GFLOPS_3B, budget, cap)


def test_tied_values_do_not_break_the_solver():
    # a saturated model can give identical values; the solver must still return valid, capped thresholds
    values = np.zeros((6, 300))
    sol = solver.solve_budget(values, GFLOPS_3B, 8.0, max_exit=5)
    assert solver.simulate(values, sol.thresholds, 5).max() <= 4


# ----------------------------------------------------------------------------------------------- checks
def test_bad_inputs_are_refused_with_a_reason():
    good = synthetic_values(np.random.default_rng(3), 6, 10)
    with pytest.raises(ValueError, match="2-D"):
        solver.solve_exit_ratio(good[0], 1.0)
    with pytest.raises(ValueError, match="NaN or Inf"):
        solver.solve_exit_ratio(np.where(good > 0.05, np.nan, good), 1.0)
    with pytest.raises(ValueError, match="positive number"):
        solver.solve_exit_ratio(good, 0.0)
    with pytest.raises(ValueError, match="max_exit must be"):
        solver.solve_exit_ratio(good, 1.0, max_exit=7)
    with pytest.raises(ValueError, match="increasing"):
        solver.solve_budget(good, GFLOPS_3B[::-1], 8.0)
    with pytest.raises(ValueError, match="one value per exit"):
        solver.solve_budget(good, GFLOPS_3B[:5], 8.0)


def test_explicit_thresholds_are_checked_and_padded():
    t = solver.check_thresholds([0.1, 0.2], n_allowed=2, n_exits=6)
    np.testing.assert_array_equal(t, [0.1, 0.2, solver.ALWAYS, solver.ALWAYS, solver.ALWAYS, solver.ALWAYS])
    assert len(solver.check_thresholds(np.ones(6), n_allowed=2, n_exits=6)) == 6  # one per built exit is fine
    with pytest.raises(ValueError, match=r"2 \(allowed exits\) or 6 \(built\) values"):
        solver.check_thresholds([0.1, 0.2, 0.3], 2, 6)
    with pytest.raises(ValueError, match="NaN"):
        solver.check_thresholds([0.1, float("nan")], 2, 2)
    with pytest.raises(ValueError, match="finite"):
        solver.check_thresholds([0.1, float("inf")], 2, 2)
    with pytest.raises(ValueError, match="list of numbers"):
        solver.check_thresholds(["a", "b"], 2, 2)
