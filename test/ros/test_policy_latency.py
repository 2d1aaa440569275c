"""deer_policy with a time budget over DDS (issue 15): the learned cost table in /diagnostics, a refusal with the
measured numbers, and a smaller latency_budget_ms choosing shallower exits than a larger one."""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.ros


def cost_table(text: str) -> dict[int, float]:
    """'1:15.2 2:20.1 3:27' -> {1: 15.2, 2: 20.1, 3: 27.0}."""
    return {int(k): float(v) for k, v in (item.split(":") for item in text.split())}


def test_latency_budget_is_refused_below_exit_1_and_a_smaller_one_runs_shallower(policy):
    t = iter(np.arange(1.0, 100.0, 0.1))
    for _ in range(12):  # warm-up of the cost model (10 steps), at the default exit_ratio
        policy.act(next(t))
    policy.spin_until(lambda: policy.counts().get("cost_model") == "warm", 10, "a warm cost model")
    costs = cost_table(policy.counts()["cost_exit_ms"])
    assert len(costs) == 3 and costs[1] < costs[3]

    refused = policy.set_parameter("latency_budget_ms", 0.5)
    assert not refused.successful
    assert "latency_budget_ms 0.5 ms cannot be met" in refused.reason and "int8" in refused.reason
    assert policy.get_parameter("latency_budget_ms") == 0.0

    def exits_under(budget_ms: float, n: int = 12) -> list[int]:
        result = policy.set_parameter("latency_budget_ms", budget_ms)
        assert result.successful, result.reason
        policy.act(next(t))  # the change is applied before this step
        return [policy.act(next(t)).exit_index for _ in range(n)]

    large = exits_under(10_000.0)  # above what every exit costs: every exit runs
    assert set(large) == {3}
    status = policy.counts()
    now = cost_table(status["cost_exit_ms"])  # the machine is shared: costs move, so aim at exit 2's cost now
    small = exits_under(now[2])
    assert np.mean(small) < np.mean(large)
    policy.spin_until(lambda: policy.counts().get("latency_budget_ms") != status["latency_budget_ms"], 10,
                            "the small budget in diagnostics")
    report = policy.counts()
    assert report["budget_binding"] == "latency_budget_ms" and report["budget_mode"] == "latency_budget"
    assert float(report["latency_realised_window_ms"]) > 0 and "cost_fixed_ms" in report
