"""LH-MTLC: sequences, instructions, CALVIN's initial states, chains on a fake simulator, and the metrics."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fake_calvin_env import FakeCalvinEnv, FakeTaskOracle

from deer_ros.calvin.dataset import CalvinSplit
from deer_ros.calvin.protocol import (SUBTASK_STEPS, ChainResult, EvalSequence, ProtocolError,
                                      SubtaskResult, canonical_instructions, fnv1_32, initial_state_seed,
                                      initial_state_to_obs, instruction_for, lh_mtlc_metrics, load_eval_sequences,
                                      load_validation_instructions, run_chain, run_lh_mtlc)
from deer_ros.calvin.recorder import CalvinRecorder
from deer_ros.calvin.sim import CalvinSim

GOLDEN = Path(__file__).parent / "data" / "calvin_initial_states.json"
STATE = {"led": 0, "lightbulb": 1, "slider": "right", "drawer": "closed", "red_block": "table",
         "blue_block": "slider_right", "pink_block": "slider_left", "grasped": 0}
CHAIN = ["open_drawer", "turn_on_led", "move_slider_left", "lift_red_block_table", "stack_block"]


# --------------------------------------------------------------------------- instructions
def test_canonical_table_covers_the_calvin_tasks(sample_root):
    table = canonical_instructions()
    assert len(table) == 34
    sample_tasks = {e["task"] for e in json.loads((sample_root / "episodes.json").read_text())["episodes"]}
    assert sample_tasks <= set(table)


def test_unknown_task_has_no_made_up_instruction():
    with pytest.raises(ProtocolError, match="no canonical instruction for task 'juggle'.*load_validation"):
        instruction_for("juggle", canonical_instructions())


def test_validation_instructions_from_a_calvin_checkout(tmp_path):
    annotations = tmp_path / "calvin" / "calvin_models" / "conf" / "annotations"
    annotations.mkdir(parents=True)
    yaml_file = annotations / "new_playtable_validation.yaml"
    yaml_file.write_text('open_drawer: ["open the drawer", "pull the drawer open"]\nclose_drawer: [ "close it"]\n')
    expected = {"open_drawer": "open the drawer", "close_drawer": "close it"}
    assert load_validation_instructions(tmp_path / "calvin") == expected
    assert load_validation_instructions(tmp_path / "calvin" / "calvin_models") == expected
    assert load_validation_instructions(yaml_file) == expected
    with pytest.raises(ProtocolError, match="no new_playtable_validation.yaml"):
        load_validation_instructions(tmp_path)
    yaml_file.write_text("open_drawer: []\n")
    with pytest.raises(ProtocolError, match="'open_drawer' has no instruction"):
        load_validation_instructions(yaml_file)


# --------------------------------------------------------------------------- sequences
def _write_sequences(folder: Path, entries) -> Path:
    path = folder / "eval_sequences.json"
    path.write_text(json.dumps(entries))
    return path


def test_load_eval_sequences(tmp_path):
    other = dict(STATE, led=1)
    path = _write_sequences(tmp_path, [[STATE, CHAIN], [other, CHAIN[::-1]], [STATE, CHAIN]])
    sequences = load_eval_sequences(path)
    assert len(sequences) == 3
    assert sequences[1] == EvalSequence(other, tuple(CHAIN[::-1]))
    assert list(sequences[0].initial_state) == list(STATE)  # key order kept: CALVIN's scene seed depends on it
    assert len(load_eval_sequences(path, limit=2)) == 2


@pytest.mark.parametrize("entries, message", [
    ({"a": 1}, "non-empty JSON list"),
    ([[STATE]], r"entry 0 is not \[initial_state, \[tasks\]\]"),
    ([[STATE, CHAIN], [STATE, CHAIN[:4]]], "entry 1 must list 5 task ids"),
    ([[STATE, CHAIN[:4] + ["juggle"]]], r"unknown task\(s\) \['juggle'\]"),
    ([[dict(STATE, slider="middle"), CHAIN]], "slider='middle'"),
    ([[{k: v for k, v in STATE.items() if k != "grasped"}, CHAIN]], "initial state keys"),
])
def test_malformed_sequence_files(tmp_path, entries, message):
    with pytest.raises(ProtocolError, match=message):
        load_eval_sequences(_write_sequences(tmp_path, entries))


# --------------------------------------------------------------------------- initial state
def test_fnv1_32_matches_the_reference_test_vectors():
    # FNV-1 32-bit vectors of the FNV reference test suite (start value = offset basis 0x811c9dc5)
    assert fnv1_32(b"", 0x811C9DC5) == 0x811C9DC5
    assert fnv1_32(b"a", 0x811C9DC5) == 0x050C5D7E
    assert fnv1_32(b"foobar", 0x811C9DC5) == 0x31F0B262


def test_initial_states_match_calvins_own_function():
    cases = json.loads(GOLDEN.read_text())["cases"]
    assert len(cases) == 6
    for case in cases:
        assert initial_state_seed(case["initial_state"]) == case["seed"]
        robot_obs, scene_obs = initial_state_to_obs(case["initial_state"])
        np.testing.assert_array_equal(robot_obs, case["robot_obs"])
        np.testing.assert_allclose(scene_obs, case["scene_obs"], rtol=0, atol=1e-12)


def test_initial_state_semantics():
    robot_obs, scene = initial_state_to_obs(dict(STATE, slider="left", drawer="open", led=1, lightbulb=0))
    assert (scene[0], scene[1], scene[3], scene[4], scene[5]) == (0.28, 0.22, 0.0, 0.0, 1.0)
    _, scene = initial_state_to_obs(STATE)
    assert (scene[0], scene[1], scene[3], scene[4], scene[5]) == (0.0, 0.0, 0.088, 1.0, 0.0)
    for yaw in scene[[11, 17, 23]]:
        assert np.pi / 2 - np.pi / 8 <= yaw <= np.pi / 2 + np.pi / 8
    assert robot_obs.shape == (15,) and robot_obs[14] == 1.0
    with pytest.raises(ProtocolError, match="red_block='floor'"):
        initial_state_to_obs(dict(STATE, red_block="floor"))


# --------------------------------------------------------------------------- chains on the fake simulator
class ScriptedPolicy:
    """Moves +x at full speed for the instructions it 'knows', stands still (gripper open) otherwise."""

    def __init__(self, known: set[str], gflops: float | None = None, nan_at: int | None = None) -> None:
        self.known, self.gflops, self.nan_at = known, gflops, nan_at
        self.resets = 0
        self.instructions: list[str] = []

    def reset(self) -> None:
        self.resets += 1

    def act(self, obs, instruction):
        self.instructions.append(instruction)
        action = np.array([1.5 if instruction in self.known else 0.0, 0, 0, 0, 0, 0, 1.0])
        if len(self.instructions) == self.nan_at:
            action[2] = np.nan
        if self.gflops is None:
            return action
        exit_index = 1 + len(self.instructions) % 2
        return type("Step", (), {"action": action, "gflops": self.gflops, "layers": 3, "exit_index": exit_index})()


def _sim() -> CalvinSim:
    return CalvinSim("unused-split", env=FakeCalvinEnv(), task_oracle=FakeTaskOracle(distance=0.09))


def test_chain_stops_at_the_first_failure():
    table = canonical_instructions()
    policy = ScriptedPolicy({table["open_drawer"], table["turn_on_led"], table["lift_red_block_table"]})
    sim = _sim()
    result = run_chain(sim, policy, EvalSequence(STATE, tuple(CHAIN)), table)
    assert [(s.task, s.success, s.steps) for s in result.subtasks] == [
        ("open_drawer", True, 5),           # 5 clipped steps of 2 cm pass the fake oracle's 9 cm
        ("turn_on_led", True, 5),
        ("move_slider_left", False, SUBTASK_STEPS),
    ]                                       # lift_red_block_table is never tried
    assert result.successes == 2
    assert policy.resets == 3 and sim.steps == 5 + 5 + SUBTASK_STEPS
    assert policy.instructions[0] == "pull the handle to open the drawer"
    assert policy.instructions[-1] == "push the sliding door to the left side"
    assert sim.env.resets == 1  # one reset per chain, none between subtasks


def test_chain_reset_uses_calvins_initial_state():
    sim = _sim()
    run_chain(sim, ScriptedPolicy(set()), EvalSequence(STATE, tuple(CHAIN)), canonical_instructions(),
              max_steps=1)
    np.testing.assert_array_equal(sim.env.scene_obs, initial_state_to_obs(STATE)[1])


def test_chain_with_an_unknown_instruction_fails_before_running():
    sim = _sim()
    with pytest.raises(ProtocolError, match="no canonical instruction for task 'open_drawer'"):
        run_chain(sim, ScriptedPolicy(set()), EvalSequence(STATE, tuple(CHAIN)), {"turn_on_led": "x"})
    assert sim.steps == 0 and sim.env.resets == 0


def test_run_lh_mtlc_metrics_and_compute():
    table = canonical_instructions()
    policy = ScriptedPolicy({table[t] for t in CHAIN}, gflops=2.5)
    other = EvalSequence(STATE, ("turn_on_led", "open_drawer", "rotate_red_block_left", "move_slider_left",
                                 "lift_red_block_table"))
    seen = []
    results = run_lh_mtlc(_sim(), policy, [EvalSequence(STATE, tuple(CHAIN)), other], max_steps=20,
                          on_chain=lambda i, r: seen.append((i, r.successes)))
    assert seen == [(0, 5), (1, 2)]
    m = lh_mtlc_metrics(results)
    assert m["chains"] == 2 and m["avg_len"] == 3.5
    assert m["success_rates"] == {"1": 1.0, "2": 1.0, "3": 0.5, "4": 0.5, "5": 0.5}
    assert m["per_task"]["rotate_red_block_left"] == {"attempts": 1, "successes": 0}
    assert m["per_task"]["open_drawer"] == {"attempts": 2, "successes": 2}
    assert m["steps"] == 7 * 5 + 20
    assert m["mean_gflops"] == pytest.approx(2.5) and m["mean_layers"] == pytest.approx(3.0)


def test_a_nan_action_fails_its_subtask_and_chain_and_the_evaluation_goes_on():
    table = canonical_instructions()
    # Every task 'known': the first subtask succeeds in 5 steps, the 8th action (3rd of subtask 2) is NaN.
    policy = ScriptedPolicy({table[t] for t in CHAIN}, gflops=1.0, nan_at=8)
    sim = _sim()
    results = run_lh_mtlc(sim, policy, [EvalSequence(STATE, tuple(CHAIN))] * 2, table)
    first, second = results
    assert [(s.success, s.steps) for s in first.subtasks] == [(True, 5), (False, 2)]
    assert "non-finite" in first.subtasks[1].fault and first.complete
    assert second.successes == 5 and second.complete  # the next chain ran in full
    assert len(sim.env.received) == 5 + 2 + 25  # the NaN action never reached the simulator
    m = lh_mtlc_metrics(results)
    assert m["faults"] == 1 and m["chains"] == 2 and m["avg_len"] == 3.0
    assert m["clipped_steps"] == 32  # every executed step had x = 1.5, clipped to 1
    assert m["steps"] == 32 and m["mean_gflops"] == pytest.approx(1.0)


def test_exits_and_compute_over_all_steps_and_over_successful_subtasks():
    chain = ChainResult(EvalSequence(STATE, tuple(CHAIN)), [
        SubtaskResult("open_drawer", "i", True, 4, gflops=8.0, layers=8, exits={1: 2, 3: 2}),
        SubtaskResult("turn_on_led", "i", False, 6, gflops=6.0, layers=6, exits={1: 6})], complete=True)
    unfinished = ChainResult(EvalSequence(STATE, tuple(CHAIN)),
                             [SubtaskResult("open_drawer", "i", True, 10, gflops=10.0, layers=10, exits={2: 10})])
    m = lh_mtlc_metrics([chain, unfinished])
    assert m["chains"] == 1 and m["unfinished_chains"] == 1 and m["avg_len"] == 1.0  # only complete chains
    assert m["exit_histogram"] == {"1": 8, "2": 10, "3": 2}
    assert m["mean_exit"] == pytest.approx((8 + 20 + 6) / 20)
    assert m["successful"]["exit_histogram"] == {"1": 2, "2": 10, "3": 2}
    assert m["successful"]["mean_exit"] == pytest.approx((2 + 20 + 6) / 14)
    assert m["mean_gflops"] == pytest.approx(24 / 20) and m["successful"]["mean_gflops"] == pytest.approx(18 / 14)


def test_metrics_by_hand():
    def chain(n_ok: int, failed: bool) -> ChainResult:
        subtasks = [SubtaskResult("t", "i", True, 10, gflops=10.0, layers=20) for _ in range(n_ok)]
        if failed:
            subtasks.append(SubtaskResult("t", "i", False, 360, gflops=0.0, layers=360))
        return ChainResult(EvalSequence(STATE, tuple(CHAIN)), subtasks, complete=True)

    m = lh_mtlc_metrics([chain(5, False), chain(2, True), chain(0, True), chain(3, True)])
    assert m["success_rates"] == {"1": 0.75, "2": 0.75, "3": 0.5, "4": 0.25, "5": 0.25}
    assert m["avg_len"] == 2.5
    # 10 successful subtasks of 10 steps at 1 GFLOP/step; 3 failed ones of 360 steps at 0
    assert m["mean_gflops"] == pytest.approx(100 / (100 + 3 * 360))
    assert m["mean_gflops_successful"] == pytest.approx(1.0)
    assert lh_mtlc_metrics([])["avg_len"] == 0.0


def test_sim_run_recorded_as_a_calvin_split(tmp_path):
    table = canonical_instructions()
    policy = ScriptedPolicy({table["open_drawer"]})
    with CalvinRecorder(tmp_path / "run") as recorder:
        result = run_chain(_sim(), policy, EvalSequence(STATE, tuple(CHAIN)), table, max_steps=8,
                           recorder=recorder)
    split = CalvinSplit(tmp_path / "run")
    assert [(s.start, s.end, s.task, s.instruction) for s in split.segments()] == [
        (0, 4, "open_drawer", "pull the handle to open the drawer"),
        (5, 12, "turn_on_led", "press the button to turn on the led light")]
    assert [s.steps for s in result.subtasks] == [5, 8]
    frame = split.frame(1)
    np.testing.assert_array_equal(frame.rel_actions, [1, 0, 0, 0, 0, 0, 1])  # the clipped action applied
    # frame t holds the observation before its action: the arm starts at CALVIN's neutral pose and moved 2 cm
    assert split.frame(0).robot_obs[0] == pytest.approx(initial_state_to_obs(STATE)[0][0])
    assert frame.robot_obs[0] == pytest.approx(split.frame(0).robot_obs[0] + 0.02)
