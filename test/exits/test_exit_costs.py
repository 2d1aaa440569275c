"""The online time-cost model and the latency budget, on a synthetic timing source (no wall clock)."""
from __future__ import annotations

import re

import numpy as np
import pytest

from deer_ros.exits.calibration import Calibration
from deer_ros.exits.controller import BudgetSettings, ExitBudget, refusal
from deer_ros.exits.costs import CostModel
from exits_helpers import GFLOPS_3B, LAYERS_3B, Step, run_decider, synthetic_values


class FakeMachine:
    """A fake timing source standing in for the wall clock: what one step of DeerPolicy + the node would measure
    on a machine with the given costs. `slowdown` multiplies every part (another process loading the CPU);
    `noise` is the relative jitter of each part; `spike_every` adds a 10x outlier to the fixed part."""

    def __init__(self, fixed_ms: float = 40.0, ms_per_gflop: float = 2.0, head_ms: float = 1.5,
                 noise: float = 0.03, seed: int = 0, spike_every: int = 0) -> None:
        self.fixed_ms, self.ms_per_gflop, self.head_ms, self.noise = fixed_ms, ms_per_gflop, head_ms, noise
        self.slowdown, self.spike_every, self.steps = 1.0, spike_every, 0
        self.rng = np.random.default_rng(seed)

    def true_exit_ms(self) -> np.ndarray:
        """The mean time of stopping at each exit (what the model should learn)."""
        return self.slowdown * (self.fixed_ms + self.ms_per_gflop * GFLOPS_3B
                                + self.head_ms * np.arange(2, len(GFLOPS_3B) + 2))

    def step(self, exit_index: int) -> tuple[Step, float]:
        """A step stopping at exit `exit_index` (1-based) and its arrival->publish ms."""
        self.steps += 1

        def jitter(x):
            return x * self.slowdown * (1 + self.noise * self.rng.standard_normal(np.shape(x)))

        segment_gflops = np.diff(GFLOPS_3B[:exit_index], prepend=0.0)
        llm = jitter(self.ms_per_gflop * segment_gflops)
        exam = jitter(np.full(exit_index, self.head_ms))
        exam[0] *= 2  # the first exit decodes the layer before it too
        fixed = jitter(self.fixed_ms) * (10 if self.spike_every and self.steps % self.spike_every == 0 else 1)
        step = Step(exit_index, float(GFLOPS_3B[exit_index - 1]), tuple(llm), tuple(exam), exit_index + 1)
        return step, float(fixed + llm.sum() + exam.sum())


@pytest.fixture
def calibration():
    rng = np.random.default_rng(0)
    return Calibration({"action_consistency": synthetic_values(rng, 6, 1000)}, GFLOPS_3B, LAYERS_3B,
                       np.repeat(np.arange(10), 100), {"model": "test"})


def learn(model: CostModel, machine: FakeMachine, steps: int, exits=(1, 3, 6)) -> None:
    for i in range(steps):
        model.record(*machine.step(exits[i % len(exits)]))


# ------------------------------------------------------------------------------------------ cost model
def test_the_model_learns_every_exit_cost_even_from_shallow_steps():
    machine, model = FakeMachine(), CostModel(GFLOPS_3B)
    learn(model, machine, 40, exits=(1, 2))  # the deep exits never ran
    np.testing.assert_allclose(model.table().exit_ms, machine.true_exit_ms(), rtol=0.03)
    table = model.table()
    assert table.warm and table.fixed_ms == pytest.approx(40.0, rel=0.03)
    assert table.head_ms == pytest.approx(1.5, rel=0.05) and table.llm_ms_per_gflop == pytest.approx(2.0, rel=0.03)


def test_outliers_do_not_move_the_costs():
    calm, spiky = CostModel(GFLOPS_3B), CostModel(GFLOPS_3B)
    learn(calm, FakeMachine(seed=1), 64)
    learn(spiky, FakeMachine(seed=1, spike_every=5), 64)  # every 5th step 10x slower (a page fault, a GC)
    np.testing.assert_allclose(spiky.table().exit_ms, calm.table().exit_ms, rtol=0.03)


def test_a_slowdown_is_followed_within_the_stated_bound():
    machine, model = FakeMachine(noise=0.0), CostModel(GFLOPS_3B, window=32)
    learn(model, machine, 40)
    machine.slowdown = 2.0  # another process starts loading the CPU
    learn(model, machine, model.follow_steps - 1)
    assert model.table().exit_ms[0] < 1.5 * machine.true_exit_ms()[0] / 2  # not yet: the old level still rules
    learn(model, machine, 1)
    np.testing.assert_allclose(model.table().exit_ms, machine.true_exit_ms(), rtol=1e-9)
    assert model.follow_steps == 17


def test_warm_up_is_reported_until_enough_steps():
    model = CostModel(GFLOPS_3B, warmup=10)
    assert "0/10" in model.table().report()["cost_model"]
    learn(model, FakeMachine(), 9)
    assert not model.table().warm and "9/10" in model.table().report()["cost_model"]
    learn(model, FakeMachine(), 1)
    report = model.table().report()
    assert report["cost_model"] == "warm" and report["cost_exit_ms"].startswith("1:")


def test_steps_without_timings_teach_nothing():
    model = CostModel(GFLOPS_3B)
    model.record(Step(2, 5.2), 50.0)  # a StepResult from a policy that does not time its exits
    model.record(Step(2, 5.2, (1.0, 1.0), (3.0, 1.5), 3), float("nan"))
    assert model.steps == 0


# ------------------------------------------------------------------------------------------ budget in ms
def run_latency(budget: ExitBudget, machine: FakeMachine, values: np.ndarray, steps: int, start: int = 0):
    """Step the budget's decider over calibration-like samples on the fake machine; (exits, latencies)."""
    exits, latencies = [], []
    for i in range(start, start + steps):
        k = run_decider(budget.decider, values, i % values.shape[1]) + 1
        step, ms = machine.step(k)
        budget.record(step, ms)
        exits.append(k)
        latencies.append(ms)
    return np.array(exits), np.array(latencies)


def test_a_latency_budget_is_held_on_average_and_picks_shallower_exits_when_smaller(calibration):
    values = calibration.values["action_consistency"]
    means = {}
    for target in (55.0, 65.0):
        machine = FakeMachine(seed=3)
        budget = ExitBudget(GFLOPS_3B, calibration, BudgetSettings(latency_budget_ms=target))
        exits, ms = run_latency(budget, machine, values, 400)
        assert budget.binding == "latency_budget_ms"
        assert abs(ms[100:].mean() / target - 1) < 0.02  # after warm-up
        means[target] = exits[100:].mean()
        assert budget.report()["latency_budget_ms"] == f"{target:g}"
    assert means[55.0] < means[65.0]


def test_the_tracker_recovers_after_a_slowdown_within_the_bound(calibration):
    values = calibration.values["action_consistency"]
    machine = FakeMachine(seed=4)
    budget = ExitBudget(GFLOPS_3B, calibration, BudgetSettings(latency_budget_ms=80.0))
    run_latency(budget, machine, values, 200)
    machine.slowdown = 1.4  # exit 1 now costs ~67 ms, the last ~114 ms: 80 ms is still reachable
    bound = budget.costs.follow_steps
    exits_before = run_latency(budget, machine, values, 0)[0]
    exits, ms = run_latency(budget, machine, values, 300, start=200)
    assert len(exits_before) == 0
    assert abs(ms[bound:bound + 100].mean() / 80.0 - 1) < 0.03  # on target again from `bound` steps on
    assert abs(ms[:bound].mean() / 80.0 - 1) > 0.03  # while the costs were being relearned it was not


def test_the_tighter_of_flops_and_latency_binds(calibration):
    values = calibration.values["action_consistency"]
    machine = FakeMachine(seed=5)
    budget = ExitBudget(GFLOPS_3B, calibration, BudgetSettings(flops_budget=5.0, latency_budget_ms=70.0))
    run_latency(budget, machine, values, 60)
    assert budget.binding == "flops_budget"  # 5 GFLOPs is tighter than 70 ms here
    budget.apply({"latency_budget_ms": 52.0})
    run_latency(budget, machine, values, 5)
    assert budget.binding == "latency_budget_ms" and budget.report()["budget_binding"] == "latency_budget_ms"


def test_before_warm_up_the_latency_budget_waits_and_says_so(calibration):
    budget = ExitBudget(GFLOPS_3B, calibration, BudgetSettings(flops_budget=8.0, latency_budget_ms=50.0))
    assert budget.binding == "flops_budget" and "waits for the cost model" in budget.report()["latency_note"]


def test_an_unreachable_latency_budget_is_refused_with_the_measured_costs(calibration):
    budget = ExitBudget(GFLOPS_3B, calibration, BudgetSettings())
    assert budget.check({"latency_budget_ms": 10.0}) is None  # nothing measured yet: cannot be judged
    run_latency(budget, FakeMachine(seed=6), calibration.values["action_consistency"], 20)
    reason = budget.check({"latency_budget_ms": 10.0})
    assert "latency_budget_ms 10 ms cannot be met" in reason
    fixed = re.search(r"costs ([\d.]+) ms before the LLM", reason)
    assert fixed and float(fixed.group(1)) == pytest.approx(40.0, rel=0.03)  # the measured fixed part
    for hint in ("int8", "GPU", "max_exit"):
        assert hint in reason
    assert budget.check({"latency_cap_ms": 10.0}).startswith("latency_cap_ms 10 ms cannot be met")
    assert refusal(BudgetSettings(), {"latency_budget_ms": -1.0}, GFLOPS_3B, calibration) is not None


def test_costs_rising_above_a_set_budget_are_reported_and_exit_1_runs(calibration):
    machine = FakeMachine(seed=7)
    values = calibration.values["action_consistency"]
    budget = ExitBudget(GFLOPS_3B, calibration, BudgetSettings(latency_budget_ms=50.0))
    run_latency(budget, machine, values, 40)
    assert "latency_note" not in budget.report() and not budget.latency_unmet
    machine.slowdown = 2.0  # exit 1 now costs ~90 ms
    exits, _ = run_latency(budget, machine, values, 40)
    assert "cannot be met" in budget.report()["latency_note"] and set(exits[-10:]) == {1}
    assert budget.latency_unmet  # what the node's warning and WARN level go by


def test_a_latency_cap_lowers_the_deepest_exit(calibration):
    machine = FakeMachine(seed=8)
    budget = ExitBudget(GFLOPS_3B, calibration, BudgetSettings(latency_cap_ms=60.0))
    exits, _ = run_latency(budget, machine, calibration.values["action_consistency"], 60)
    deepest = int(np.flatnonzero(machine.true_exit_ms() <= 60.0)[-1]) + 1
    assert budget.report()["cap_binding"] == "latency_cap_ms" and budget.report()["max_exit"] == str(deepest)
    assert exits[-30:].max() <= deepest < 6
