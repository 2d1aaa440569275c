"""Calibration and deciders with the real tiny model on the real CALVIN sample."""
import numpy as np
import pytest
import torch

from deer_ros.calvin.dataset import CalvinSplit
from deer_ros.exits import ExitController, FixedExit, collect_calibration, criterion_names
from deer_ros.exits.calibration import split_segments
from deer_ros.model.config import DeerConfig
from deer_ros.model.deer import build_model
from deer_ros.model.policy import DeerPolicy
from deer_ros.model.tokenizer import load_tokenizer
from deer_ros.paths import calvin_sample


@pytest.fixture(scope="module")
def policy():
    torch.manual_seed(0)
    config = DeerConfig.preset("tiny")
    return DeerPolicy(build_model(config), load_tokenizer(config.tokenizer))


@pytest.fixture(scope="module")
def split():
    return CalvinSplit(calvin_sample() / "validation")


def test_collect_records_every_exit_and_criterion_per_frame(policy, split):
    cal = collect_calibration(policy, split_segments(split, "0,2", max_frames=4), meta={"model": "tiny"})
    n_exits = len(policy.exits)
    assert cal.criteria == criterion_names()
    for name in cal.criteria:
        v = cal.values[name]
        assert v.shape == (n_exits, 8) and np.all(np.isfinite(v)) and np.all(v >= 0)
        assert np.ptp(v) > 0  # the values really vary over frames and exits
    np.testing.assert_array_equal(cal.segment, [0] * 4 + [2] * 4)
    np.testing.assert_array_equal(cal.exit_layers, [e.layers for e in policy.exits])
    assert cal.meta["frames"] == 8 and cal.meta["segments"] == 2 and cal.meta["model"] == "tiny"
    # GFLOPs measured at the real prompts: same shape across exits as the nominal (typical prompt) costs
    nominal = np.array(cal.meta["exit_gflops_nominal"])
    np.testing.assert_allclose(cal.exit_gflops / cal.exit_gflops[-1], nominal / nominal[-1])


def test_each_segment_starts_from_a_reset_history(policy, split):
    both = collect_calibration(policy, split_segments(split, "0,1", max_frames=3), ["action_consistency"])
    alone = collect_calibration(policy, split_segments(split, "1", max_frames=1), ["action_consistency"])
    # the first frame of segment 1 gives the same values after segment 0 as on a fresh policy
    np.testing.assert_allclose(both.values["action_consistency"][:, 3], alone.values["action_consistency"][:, 0],
                               rtol=1e-5, atol=1e-7)
    # and a segment's values do not depend on what the policy ran before it
    again = collect_calibration(policy, split_segments(split, "0", max_frames=3), ["action_consistency"])
    np.testing.assert_allclose(again.values["action_consistency"], both.values["action_consistency"][:, :3],
                               rtol=1e-5, atol=1e-7)


def test_deciders_drive_the_real_policy(policy, split):
    frame = split.frame(split.segments()[0].start)
    policy.reset()
    assert policy.step(frame.rgb_static, frame.rgb_gripper, "pick up the block", FixedExit(2)).exit_index == 2
    n = len(policy.exits)
    never = ExitController("action_consistency", [-1.0] * n)
    policy.reset()
    result = policy.step(frame.rgb_static, frame.rgb_gripper, "pick up the block", never)
    assert result.exit_index == n and len(result.values) == n  # one decision value per examined exit
    always = ExitController("action_consistency", [1e8] * n)
    policy.reset()
    result = policy.step(frame.rgb_static, frame.rgb_gripper, "pick up the block", always)
    assert result.exit_index == 1 and len(result.values) == 1
    capped = ExitController("action_consistency", [-1.0] * n, max_exit=2)
    assert policy.step(frame.rgb_static, frame.rgb_gripper, "pick up the block", capped).exit_index == 2


def test_offline_evaluator_scores_the_pose_error_and_the_compute_actually_spent(policy, split):
    from deer_ros.exits.bayes import OfflineEvaluator

    from deer_ros.calvin.replay import load_segments

    (seg,) = load_segments(split, [1], max_frames=3)
    frames = [(f.static, f.gripper, f.action) for f in seg.frames]
    evaluate = OfflineEvaluator(policy, [seg])
    n = len(policy.exits)
    for thresholds, exit_index in (([1e8] * n, 1), ([-1.0] * n, n)):
        score, gflops = evaluate(np.array(thresholds))
        policy.reset()  # the same run by hand
        results = [policy.step(s, g, seg.instruction, FixedExit(exit_index)) for s, g, _ in frames]
        actions = np.array([r.action[:6] for r in results])
        recorded = np.array([a[:6] for _, _, a in frames])
        assert score == pytest.approx(-np.sqrt(np.mean((actions - recorded) ** 2)), rel=1e-5)
        assert gflops == pytest.approx(np.mean([r.gflops for r in results]))
        assert all(r.exit_index == exit_index for r in results)
    with pytest.raises(ValueError, match="at least one recorded segment"):
        OfflineEvaluator(policy, [])


class StepsEnv:
    """A stand-in simulator with the SubtaskEnv interface (deer_ros.calvin.protocol): observations are real
    sample frames; a subtask counts as done after `done_after` steps. It only exercises the plumbing."""

    def __init__(self, frames, done_after: int):
        from deer_ros.calvin.protocol import SimObservation

        self.obs = [SimObservation(f.rgb_static, f.rgb_gripper, np.zeros(15), np.zeros(24)) for f in frames]
        self.done_after, self.steps, self.subtasks = done_after, 0, 0

    def reset(self, robot_obs, scene_obs):
        return self.obs[0]

    def start_subtask(self):
        self.steps, self.subtasks = 0, self.subtasks + 1

    def step(self, action):
        self.steps += 1
        return self.obs[self.steps % len(self.obs)], np.asarray(action)

    def subtask_done(self, task):
        return self.steps >= self.done_after


def test_closed_loop_evaluator_runs_chains_under_the_thresholds(policy, split):
    from deer_ros.calvin.protocol import EvalSequence
    from deer_ros.exits.bayes import ClosedLoopEvaluator

    state = {"led": 0, "lightbulb": 1, "slider": "right", "drawer": "closed", "red_block": "table",
             "blue_block": "slider_right", "pink_block": "slider_left", "grasped": 0}
    chain = EvalSequence(state, ("open_drawer", "turn_on_led", "move_slider_left", "lift_red_block_table",
                                 "stack_block"))
    env = StepsEnv(list(split.frames(split.segments()[0]))[:4], done_after=2)
    evaluate = ClosedLoopEvaluator(policy, env, [chain])
    n = len(policy.exits)
    avg_len, gflops_first = evaluate(np.full(n, 1e8))  # every step stops at exit 1
    assert avg_len == 5.0 and env.subtasks == 5
    _, gflops_last = evaluate(np.full(n, -1.0))  # every step runs to the last exit
    # same prompts, 1 vs n exits' worth of layers: the cost ratio is the exits' nominal ratio
    assert gflops_last / gflops_first == pytest.approx(policy.exits[-1].gflops / policy.exits[0].gflops)
