"""The control-step API: dynamic exits, no repeated work, LSTM history from the chosen exit only."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from deer_ros.model.flops import llm_macs
from deer_ros.model.policy import DeerPolicy, ExitCandidate, ExitDecision

from model_fixtures import tiny_model

INSTRUCTION = "pick up the red block"


def fixed(k: int):
    """Stop exactly at exit k (the 'run to exit k' path)."""
    return lambda c: ExitDecision(c.index == k)


def rms_decider(threshold: float, log: list):
    """DeeR's action-consistency rule, recording what it saw."""
    def decide(c: ExitCandidate) -> ExitDecision:
        value = float(torch.sqrt(torch.mean((c.pose - c.prev_pose) ** 2)))
        log.append((c.index, c.feature.clone(), value))
        return ExitDecision(value <= threshold, value)
    return decide


def make_policy(tokenizer, seed: int = 0) -> DeerPolicy:
    return DeerPolicy(tiny_model(seed), tokenizer)


def test_exits_describe_the_built_model(tiny_tokenizer):
    policy = make_policy(tiny_tokenizer)
    c = policy.config
    assert [(e.index, e.layer, e.layers) for e in policy.exits] == [(1, 1, 2), (2, 3, 4), (3, 5, 6)]
    for e in policy.exits:
        assert e.gflops == pytest.approx(llm_macs(c, e.layers, c.typical_prompt_tokens) / 1e9)


def test_dynamic_exit_equals_fixed_exit_path(tiny_tokenizer, frames):
    """Replaying the exits a dynamic run chose with FixedExit gives bit-identical features and actions."""
    # A threshold between the typical first-exit values, so the dynamic run really chooses different exits.
    probe = make_policy(tiny_tokenizer)
    first_values = []
    for static, gripper in frames:
        log: list = []
        probe.step(static, gripper, INSTRUCTION, rms_decider(-1.0, log))
        first_values.append(log[0][2])
    threshold = float(np.median(first_values))

    dynamic, replay = make_policy(tiny_tokenizer), make_policy(tiny_tokenizer)
    chosen = []
    for static, gripper in frames:
        log: list = []
        r = dynamic.step(static, gripper, INSTRUCTION, rms_decider(threshold, log))
        seen: list = []
        r_fixed = replay.step(static, gripper, INSTRUCTION, lambda c, k=r.exit_index, seen=seen: ExitDecision(
            seen.append(c.feature.clone()) or c.index == k))
        chosen.append(r.exit_index)
        assert r_fixed.exit_index == r.exit_index and r_fixed.layers == r.layers
        np.testing.assert_array_equal(r_fixed.action, r.action)
        assert torch.equal(seen[-1], log[-1][1])  # the chosen exit's pooled feature
        assert r.values == [v for _, _, v in log] and len(r.values) == r.exit_index
    assert len(set(chosen)) >= 2, f"the dynamic run never changed exit ({chosen}): the test would be vacuous"


def test_batched_features_match_the_step_path(tiny_tokenizer, frames, model):
    """forward_exit_features (training/calibration) sees the same exit features as the control step."""
    policy = DeerPolicy(model, tiny_tokenizer)
    static, gripper = frames[0]
    seen: dict[int, ExitCandidate] = {}
    policy.step(static, gripper, INSTRUCTION, lambda c: ExitDecision(seen.setdefault(c.index, c) is None))
    enc = policy.prompts([INSTRUCTION])
    images = policy.preprocess(static, gripper)
    feats = model.forward_exit_features(images, enc.input_ids, enc.media_locations, enc.attention_mask)
    assert feats.shape == (1, 6, model.config.d_model)
    for k, layer in enumerate(model.exit_layers, start=1):
        torch.testing.assert_close(seen[k].feature, feats[0, layer], rtol=1e-5, atol=1e-5)
    # the first exit compares against a decode of layer 0, later exits against the previous exit
    torch.testing.assert_close(seen[1].prev_feature, feats[0, 0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(seen[1].prev_pose, model.head.step(feats[:, 0], None).pose[0, 0], rtol=1e-5, atol=1e-5)
    assert torch.equal(seen[2].prev_pose, seen[1].pose) and torch.equal(seen[3].prev_feature, seen[2].feature)


def test_no_layer_runs_twice(tiny_tokenizer, frames, model):
    calls: dict[str, int] = {}

    def count(name):
        return lambda *_: calls.__setitem__(name, calls.get(name, 0) + 1)

    for i, blk in enumerate(model.blocks):
        blk.register_forward_hook(count(f"block{i}"))
    for i, xa in model.xattn.items():
        xa.register_forward_hook(count(f"xattn{i}"))
    batch_sizes = []
    model.perceiver.register_forward_hook(lambda m, inp, out: batch_sizes.append(inp[0].shape[0]))
    policy = DeerPolicy(model, tiny_tokenizer)
    static, gripper = frames[0]
    for k, layers in ((1, 2), (2, 4), (3, 6)):
        calls.clear()
        batch_sizes.clear()
        r = policy.step(static, gripper, INSTRUCTION, fixed(k))
        assert r.layers == layers
        assert calls == {**{f"block{i}": 1 for i in range(layers)}, **{f"xattn{i}": 1 for i in range(layers)}}
        assert batch_sizes == [2]  # both cameras in one pass


def test_last_exit_is_forced_and_values_are_collected(tiny_tokenizer, frames):
    policy = make_policy(tiny_tokenizer)
    seen = []

    def never(c: ExitCandidate) -> ExitDecision:
        seen.append(c.is_last)
        return ExitDecision(False, float(c.index))

    r = policy.step(*frames[0], INSTRUCTION, never)
    assert (r.exit_index, r.layers) == (3, 6) and seen == [False, False, True] and r.values == [1.0, 2.0, 3.0]
    # one timing per examined exit for the cost model, and the head decoded once per exit plus the first's previous
    assert len(r.llm_ms) == len(r.exit_ms) == 3 and r.head_decodes == 4
    assert all(t >= 0 for t in r.llm_ms + r.exit_ms)


def test_a_decider_returning_a_bare_bool_is_refused_with_the_contract(tiny_tokenizer, frames):
    policy = make_policy(tiny_tokenizer)
    with pytest.raises(TypeError, match="return ExitDecision"):
        policy.step(*frames[0], INSTRUCTION, lambda c: True)


def test_state_is_committed_only_from_the_chosen_exit(tiny_tokenizer, frames, model):
    policy = DeerPolicy(model, tiny_tokenizer)
    enc = policy.prompts([INSTRUCTION])
    (s0, g0), (s1, g1) = frames[0], frames[1]
    policy.step(s0, g0, INSTRUCTION, fixed(2))  # exits 1 examined, 2 chosen
    r = policy.step(s1, g1, INSTRUCTION, fixed(3))

    def feats(s, g):
        return model.forward_exit_features(policy.preprocess(s, g), enc.input_ids, enc.media_locations)

    with torch.no_grad():
        state = model.head.step(feats(s0, g0)[:, 3], None).state  # only exit 2 (layer 3) enters the history
        expected = model.head.step(feats(s1, g1)[:, 5], state)
    torch.testing.assert_close(torch.from_numpy(r.action[:6]), expected.pose[0, 0], rtol=1e-5, atol=1e-5)
    assert r.action[6] == (1.0 if expected.gripper_prob.item() > 0.5 else -1.0)


def test_reset_clears_history(tiny_tokenizer, frames):
    a, b = make_policy(tiny_tokenizer), make_policy(tiny_tokenizer)
    for s, g in frames[:3]:
        a.step(s, g, INSTRUCTION, fixed(2))
    a.reset()
    np.testing.assert_array_equal(a.step(*frames[4], INSTRUCTION, fixed(2)).action,
                                  b.step(*frames[4], INSTRUCTION, fixed(2)).action)
    # without a reset the history does change the action
    assert not np.array_equal(a.step(*frames[5], INSTRUCTION, fixed(2)).action,
                              make_policy(tiny_tokenizer).step(*frames[5], INSTRUCTION, fixed(2)).action)


def test_instruction_is_tokenised_once_until_it_changes(tiny_tokenizer, frames):
    policy = make_policy(tiny_tokenizer)
    calls = []
    encode = policy.prompts.__call__
    policy.prompts = lambda texts: calls.append(texts) or encode(texts)
    for s, g in frames[:3]:
        policy.step(s, g, INSTRUCTION, fixed(1))
    policy.step(*frames[3], "open the drawer", fixed(1))
    policy.step(*frames[4], "open the drawer", fixed(1))
    assert calls == [[INSTRUCTION], ["open the drawer"]]


def test_step_result_fields(tiny_tokenizer, frames):
    policy = make_policy(tiny_tokenizer)
    r = policy.step(*frames[0], INSTRUCTION, fixed(2))
    assert r.action.shape == (7,) and r.action.dtype == np.float32
    assert np.all(np.abs(r.action[:6]) <= 1.0) and r.action[6] in (-1.0, 1.0)
    L = policy.prompts([INSTRUCTION]).input_ids.shape[1]
    assert r.gflops == pytest.approx(llm_macs(policy.config, 4, L) / 1e9)
    assert set(r.timings_ms) == {"preprocess", "vision", "llm", "head", "total"}
    assert r.timings_ms["total"] >= r.timings_ms["vision"] + r.timings_ms["llm"]


def test_any_image_size_is_accepted(tiny_tokenizer):
    policy = make_policy(tiny_tokenizer)
    rng = np.random.default_rng(0)
    r = policy.step(rng.integers(0, 255, (200, 160, 3), np.uint8), rng.integers(0, 255, (84, 84, 3), np.uint8),
                    INSTRUCTION, fixed(1))
    assert np.all(np.isfinite(r.action))


@pytest.mark.parametrize("static, gripper, instruction, message", [
    (np.zeros((64, 64, 3), np.float32), np.zeros((64, 64, 3), np.uint8), INSTRUCTION, "uint8"),
    (np.zeros((64, 64), np.uint8), np.zeros((64, 64, 3), np.uint8), INSTRUCTION, r"\(H, W, 3\)"),
    (np.zeros((64, 64, 3), np.uint8), np.zeros((0, 64, 3), np.uint8), INSTRUCTION, "gripper_rgb"),
    (np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64, 3), np.uint8), "  ", "non-empty"),
])
def test_bad_input_is_refused_with_a_reason(tiny_tokenizer, static, gripper, instruction, message):
    policy = make_policy(tiny_tokenizer)
    with pytest.raises(ValueError, match=message):
        policy.step(static, gripper, instruction, fixed(1))
