"""Vision-token reuse: a camera's cached tokens stand in for its encoding only while its image barely changed."""
from __future__ import annotations

import numpy as np
import pytest

from deer_ros.model.decision import CONTINUE
from deer_ros.model.policy import DeerPolicy
from deer_ros.model.vision_reuse import CameraReuse, VisionReuse

from model_fixtures import tiny_model

INSTRUCTION = "pick up the red block"
OFF_CAMERA = CameraReuse()
LAST_EXIT = lambda c: CONTINUE  # noqa: E731 - run to the last exit: the action then depends on every layer


def reuse_both(threshold: float = 3.0, max_age: int = 5) -> VisionReuse:
    return VisionReuse((CameraReuse(threshold, max_age), CameraReuse(threshold, max_age)))


def noisy(image: np.ndarray, amplitude: int, seed: int = 0) -> np.ndarray:
    """The image with independent +-amplitude grey-level noise on every pixel (sensor noise)."""
    noise = np.random.default_rng(seed).integers(-amplitude, amplitude + 1, image.shape)
    return np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8)


class PerceiverCalls:
    """How many camera images the model's perceiver encoded at each call (a forward hook on the real module)."""

    def __init__(self, policy: DeerPolicy) -> None:
        self.batches: list[int] = []
        policy.model.perceiver.register_forward_hook(lambda _m, args, _out: self.batches.append(args[0].shape[0]))


def test_off_by_default_every_camera_is_encoded_every_step(tiny_tokenizer, frames):
    policy = DeerPolicy(tiny_model(), tiny_tokenizer)
    calls = PerceiverCalls(policy)
    static, gripper = frames[0]
    results = [policy.step(static, gripper, INSTRUCTION, LAST_EXIT) for _ in range(3)]  # identical frames
    assert calls.batches == [2, 2, 2]  # both cameras in one batched pass, each step
    assert all(r.vision_reused == (False, False) for r in results)


def test_reuse_on_but_never_triggered_gives_bit_identical_actions(tiny_tokenizer, frames):
    """Consecutive CALVIN frames all differ by more than a 0.01 grey-level threshold: the reuse path then runs the
    same batched encoding as reuse off, so every action is bit-identical."""
    off = DeerPolicy(tiny_model(), tiny_tokenizer)
    on = DeerPolicy(tiny_model(), tiny_tokenizer, vision_reuse=reuse_both(threshold=0.01))
    for static, gripper in frames:
        a, b = off.step(static, gripper, INSTRUCTION, LAST_EXIT), on.step(static, gripper, INSTRUCTION, LAST_EXIT)
        assert b.vision_reused == (False, False)
        np.testing.assert_array_equal(a.action, b.action)


def test_a_near_identical_image_reuses_the_tokens_of_the_encoded_frame(tiny_tokenizer, frames):
    """Sensor noise of +-2 grey levels reuses the cached tokens: the step then acts exactly as if the earlier frame
    had been seen again (its tokens, not the noisy image's)."""
    static, gripper = frames[0]
    on = DeerPolicy(tiny_model(), tiny_tokenizer, vision_reuse=reuse_both())
    ref = DeerPolicy(tiny_model(), tiny_tokenizer)
    calls = PerceiverCalls(on)
    on.step(static, gripper, INSTRUCTION, LAST_EXIT)
    ref.step(static, gripper, INSTRUCTION, LAST_EXIT)
    r = on.step(noisy(static, 2), gripper, INSTRUCTION, LAST_EXIT)
    assert r.vision_reused == (True, True) and 0 < r.vision_change[0] <= 3.0 and r.vision_change[1] == 0.0
    assert calls.batches == [2]  # the second step encoded nothing
    np.testing.assert_array_equal(r.action, ref.step(static, gripper, INSTRUCTION, LAST_EXIT).action)


def test_a_changed_image_is_encoded_and_only_that_camera(tiny_tokenizer, frames):
    static, gripper = frames[0]
    moved = frames[-1][0]  # the static view several frames later: the arm has moved
    on = DeerPolicy(tiny_model(), tiny_tokenizer, vision_reuse=reuse_both(threshold=1.0))
    calls = PerceiverCalls(on)
    on.step(static, gripper, INSTRUCTION, LAST_EXIT)
    r = on.step(moved, gripper, INSTRUCTION, LAST_EXIT)
    assert r.vision_reused == (False, True) and r.vision_change[0] > 1.0
    assert calls.batches == [2, 1]
    # the static camera freshly encoded alone + the gripper's cached tokens = what encoding both gives
    ref = DeerPolicy(tiny_model(), tiny_tokenizer)
    ref.step(static, gripper, INSTRUCTION, LAST_EXIT)
    np.testing.assert_allclose(r.action, ref.step(moved, gripper, INSTRUCTION, LAST_EXIT).action, atol=1e-5)


def test_a_slow_drift_adds_up_against_the_encoded_frame(tiny_tokenizer, frames):
    """Each step brightens the static image by 1 grey level: under a 2.5 threshold the first two steps reuse, the
    third (3 levels from the encoded frame) re-encodes, though it is only 1 level from the previous step."""
    static, gripper = frames[0]
    on = DeerPolicy(tiny_model(), tiny_tokenizer, vision_reuse=VisionReuse((CameraReuse(2.5, 10),)))
    base = static.astype(np.int16).clip(0, 250)
    reused = [on.step((base + k).astype(np.uint8), gripper, INSTRUCTION, LAST_EXIT).vision_reused for k in range(5)]
    assert reused == [(False, False), (True, False), (True, False), (False, False), (True, False)]


def test_max_age_forces_a_re_encode(tiny_tokenizer, frames):
    static, gripper = frames[0]
    on = DeerPolicy(tiny_model(), tiny_tokenizer, vision_reuse=VisionReuse((CameraReuse(3.0, 2), OFF_CAMERA)))
    calls = PerceiverCalls(on)
    reused = [on.step(static, gripper, INSTRUCTION, LAST_EXIT).vision_reused[0] for _ in range(6)]
    assert reused == [False, True, True, False, True, True]
    assert calls.batches == [2, 1, 1, 2, 1, 1]  # the gripper camera (reuse off) is encoded every step


def test_reset_and_a_new_instruction_clear_the_cache(tiny_tokenizer, frames):
    static, gripper = frames[0]
    on = DeerPolicy(tiny_model(), tiny_tokenizer, vision_reuse=reuse_both())
    on.step(static, gripper, INSTRUCTION, LAST_EXIT)
    assert on.step(static, gripper, INSTRUCTION, LAST_EXIT).vision_reused == (True, True)
    on.reset()
    assert on.step(static, gripper, INSTRUCTION, LAST_EXIT).vision_reused == (False, False)
    assert on.step(static, gripper, "open the drawer", LAST_EXIT).vision_reused == (False, False)
    assert on.step(static, gripper, "open the drawer", LAST_EXIT).vision_reused == (True, True)
    on.set_vision_reuse(reuse_both(threshold=4.0))  # new settings start from an empty cache too
    assert on.step(static, gripper, "open the drawer", LAST_EXIT).vision_reused == (False, False)


def test_an_image_of_another_size_is_encoded(tiny_tokenizer, frames):
    static, gripper = frames[0]
    on = DeerPolicy(tiny_model(), tiny_tokenizer, vision_reuse=reuse_both(threshold=255.0))
    on.step(static, gripper, INSTRUCTION, LAST_EXIT)
    r = on.step(static[:, :150], gripper, INSTRUCTION, LAST_EXIT)
    assert r.vision_reused == (False, True)


def test_a_bad_image_is_refused_even_when_its_tokens_could_be_reused(tiny_tokenizer, frames):
    static, gripper = frames[0]
    on = DeerPolicy(tiny_model(), tiny_tokenizer, vision_reuse=reuse_both())
    on.step(static, gripper, INSTRUCTION, LAST_EXIT)
    with pytest.raises(ValueError, match="gripper_rgb must be uint8"):
        on.step(static, gripper.astype(np.float32), INSTRUCTION, LAST_EXIT)


@pytest.mark.parametrize("kwargs, message", [({"threshold": -1.0}, r"\[0, 255\]"),
                                             ({"threshold": float("nan")}, r"\[0, 255\]"),
                                             ({"max_age": -2}, "integer >= 0"), ({"max_age": 1.5}, "integer >= 0")])
def test_bad_settings_are_refused_with_the_accepted_range(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CameraReuse(**kwargs)

