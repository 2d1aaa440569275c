"""BudgetTracker: integral correction, anti wind-up at the limits, correction kept across budget changes."""
import numpy as np
import pytest

from deer_ros.exits.tracking import BudgetTracker


def test_correction_moves_the_target_against_the_error():
    t = BudgetTracker(8.0, 2.0, 16.0, gain=0.1)
    assert t.target == 8.0
    assert t.record(12.0) == pytest.approx(8.0 * (1 - 0.1 * 0.5))  # overspent: aim lower
    t2 = BudgetTracker(8.0, 2.0, 16.0, gain=0.1)
    assert t2.record(4.0) == pytest.approx(8.0 * (1 + 0.1 * 0.5))  # underspent: aim higher


def test_closed_loop_with_a_biased_plant_converges_to_the_budget():
    # a world where every step costs 30% more than the solver was told: the mean still converges to the budget
    t = BudgetTracker(8.0, 2.0, 16.0, gain=0.05)
    rng = np.random.default_rng(0)
    spent = []
    for _ in range(400):
        g = 1.3 * t.target * rng.uniform(0.5, 1.5)
        spent.append(g)
        t.record(g)
    assert abs(np.mean(spent) / 8.0 - 1) < 0.05
    assert abs(np.mean(spent[-200:]) / 8.0 - 1) < 0.05
    assert t.target == pytest.approx(8.0 / 1.3, rel=0.1)


def test_no_wind_up_beyond_the_limits():
    t = BudgetTracker(8.0, 2.0, 10.0, gain=0.5)
    for _ in range(100):
        t.record(0.0)  # the world cannot spend: the target stops at the deepest exit's cost
    assert t.target == pytest.approx(10.0)
    t.record(8.0)
    assert t.target == pytest.approx(10.0)  # and comes back from there at once, not from a wound-up value
    t.set_limits(2.0, 9.0)
    assert t.target == pytest.approx(9.0)


def test_budget_change_keeps_the_relative_correction():
    t = BudgetTracker(8.0, 2.0, 16.0, gain=0.1)
    t.record(12.0)
    c = t.correction
    t.set_budget(4.0)
    assert t.correction == c and t.target == pytest.approx(4.0 * (1 + c))


def test_bad_values_are_refused():
    with pytest.raises(ValueError, match="gain must be > 0"):
        BudgetTracker(8.0, 2.0, 16.0, gain=0.0)
    with pytest.raises(ValueError, match="budget must be a positive number"):
        BudgetTracker(0.0, 2.0, 16.0)
    with pytest.raises(ValueError, match="0 < lo <= hi"):
        BudgetTracker(8.0, 16.0, 2.0)
    with pytest.raises(ValueError, match="finite number >= 0"):
        BudgetTracker(8.0, 2.0, 16.0).record(float("nan"))
