"""`deer-ros bench latency` / `bench reuse`: the recovery measure on known traces, and bad options refused."""
from __future__ import annotations

import pytest

from deer_ros.bench.cli import bench_main
from deer_ros.bench.latency import recovery


def test_recovery_counts_the_steps_until_the_running_mean_is_back_for_good():
    # on target (10 ms), a load doubles 4 steps from step 5, then the policy is back on target
    ms = [10.0] * 5 + [20.0] * 4 + [10.0] * 20
    got = recovery(ms, start=5, target=10.0, window=4)
    # the 4-step running mean leaves the 5% band at step 5 and is back inside at step 12 (steps 9-12: 10 ms)
    assert got["steps_to_recover"] == 7
    assert got["worst_error_pct"] == pytest.approx(100.0)
    assert got["error_end_pct"] == pytest.approx(0.0)


def test_a_load_never_recovered_from_is_reported_as_such():
    got = recovery([10.0] * 5 + [13.0] * 10, start=5, target=10.0, window=3)
    assert got["steps_to_recover"] is None and got["error_end_pct"] == pytest.approx(30.0)


def test_a_load_within_the_goal_needs_no_recovery():
    assert recovery([10.0] * 5 + [10.4] * 10, start=5, target=10.0, window=3)["steps_to_recover"] == 0


@pytest.mark.parametrize("argv, message", [
    (["latency", "--model", "of9b"], "not benchmarked here"),
    (["latency", "--load-duty", "1.5"], "--load-duty must be between 0 and 1"),
    (["reuse", "--thresholds", "300"], "[0, 255]"),
    (["reuse", "--cameras", "left"], "unknown camera set"),
])
def test_bad_options_are_refused_before_anything_runs(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        bench_main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err
