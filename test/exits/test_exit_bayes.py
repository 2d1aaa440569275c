"""Online threshold search: improves the penalised score, respects the box, resumes from its log."""
import json

import numpy as np
import pytest

from deer_ros.exits import bayes, solver
from exits_helpers import GFLOPS_3B, synthetic_values

N = 800


@pytest.fixture
def problem():
    """An evaluator on synthetic data where stopping late lowers the error: thresholds -> (-error, GFLOPs)."""
    rng = np.random.default_rng(0)
    values = synthetic_values(rng, 6, N)
    # action error of each exit: shrinks with depth, larger where the exits disagree (large criterion values)
    error = values * 30 * np.exp(-0.7 * np.arange(6))[:, None]
    calls = []

    def evaluate(thresholds):
        calls.append(np.array(thresholds))
        exits = solver.simulate(values, thresholds)
        return -float(error[exits, np.arange(N)].mean()), solver.average_gflops(exits, GFLOPS_3B)

    init = solver.solve_exit_ratio(values, 1.0).thresholds  # an exit_ratio start, as in the reference
    return evaluate, init, calls


def test_search_finds_a_better_penalised_score_than_its_start_inside_the_box(problem, tmp_path):
    evaluate, init, calls = problem
    box = bayes.search_box(init[:5])
    result = bayes.search_thresholds(evaluate, init, budget=8.0, n_calls=14, log_path=tmp_path / "log.json")
    assert len(result.evaluations) == len(calls) == 14
    np.testing.assert_allclose(calls[0], init)  # the start is evaluated first
    start = result.evaluations[0]
    assert result.best.objective < start.objective
    assert result.best.objective == min(e.objective for e in result.evaluations)
    for e in result.evaluations:
        assert all(lo <= t <= hi for t, (lo, hi) in zip(e.thresholds[:5], box))
        assert e.thresholds[5] == solver.ALWAYS
        assert e.objective == pytest.approx(bayes.objective(e.score, e.gflops, 8.0, 1.0))


def test_resume_reruns_nothing_and_continues_to_n_calls(problem, tmp_path):
    evaluate, init, calls = problem
    log = tmp_path / "log.json"
    first = bayes.search_thresholds(evaluate, init, budget=8.0, n_calls=6, log_path=log)
    assert len(calls) == 6
    resumed = bayes.search_thresholds(evaluate, init, budget=8.0, n_calls=9, log_path=log)
    assert len(calls) == 9  # only the 3 missing calls ran
    assert resumed.evaluations[:6] == first.evaluations
    assert len(json.loads(log.read_text())["evaluations"]) == 9
    with pytest.raises(ValueError, match="other settings"):
        bayes.search_thresholds(evaluate, init, budget=6.0, n_calls=10, log_path=log)


def test_penalty_is_relative_and_only_above_the_budget():
    assert bayes.objective(0.5, 8.0, 8.0, 1.0) == -0.5
    assert bayes.objective(0.5, 4.0, 8.0, 1.0) == -0.5
    assert bayes.objective(0.5, 12.0, 8.0, 2.0) == pytest.approx(-0.5 + 2.0 * 0.5)


def test_box_is_clipped_at_zero_and_can_switch_on_a_disabled_exit():
    box = bayes.search_box([0.02, 0.004, solver.NEVER])
    assert box[0] == pytest.approx((0.01, 0.03))
    assert box[1] == pytest.approx((0.002, 0.006))
    assert box[2][0] == 0.0 and box[2][1] > 0.0


def test_bad_search_settings_are_refused(problem):
    evaluate, init, _ = problem
    with pytest.raises(ValueError, match="one allowed exit"):
        bayes.search_thresholds(evaluate, init, 8.0, max_exit=1)
    with pytest.raises(ValueError, match="positive number of GFLOPs"):
        bayes.search_thresholds(evaluate, init, 0.0)
    with pytest.raises(ValueError, match="5 \\(low, high\\) pairs"):
        bayes.search_thresholds(evaluate, init, 8.0, box=[(0, 1)])
