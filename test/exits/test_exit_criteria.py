"""Exit criteria: values on hand-computed cases, the registry, and input handling."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from deer_ros.exits import criteria
from exits_helpers import candidate


def test_action_criteria_on_a_hand_computed_pose_difference():
    c = candidate(2, pose=[0.3, 0, 0, 0, 0, -0.1], prev_pose=[0.1, 0, 0, 0, 0, 0.2])
    diff = np.array([0.2, 0, 0, 0, 0, -0.3])
    assert criteria.action_consistency(c) == pytest.approx(math.sqrt((0.04 + 0.09) / 6))
    assert criteria.action_consistency_mean(c) == pytest.approx(0.5 / 6)
    assert criteria.action_consistency_max(c) == pytest.approx(0.3)
    assert criteria.get_criterion("action_consistency")(c) == pytest.approx(np.sqrt(np.mean(diff ** 2)))


def test_cosine_criteria_are_zero_for_parallel_one_for_orthogonal_two_for_opposite():
    e1, e2 = np.eye(6)[0], np.eye(6)[1]
    assert criteria.action_cosine(candidate(1, 2 * e1, e1)) == pytest.approx(0.0, abs=1e-12)
    assert criteria.action_cosine(candidate(1, e1, e2)) == pytest.approx(1.0)
    assert criteria.action_cosine(candidate(1, e1, -e1)) == pytest.approx(2.0)
    # feature_cosine looks at the features, not the poses
    c = candidate(1, pose=e1, prev_pose=e1, feature=[1.0, 0.0], prev_feature=[0.0, 1.0])
    assert criteria.feature_cosine(c) == pytest.approx(1.0)
    assert criteria.action_cosine(c) == pytest.approx(0.0, abs=1e-12)


def test_cosine_of_a_zero_vector_is_finite():
    value = criteria.action_cosine(candidate(1, np.zeros(6), np.ones(6)))
    assert math.isfinite(value) and value == pytest.approx(1.0)


def test_every_registered_criterion_is_nonnegative_and_zero_for_identical_exits():
    rng = np.random.default_rng(0)
    for name in criteria.criterion_names():
        fn = criteria.get_criterion(name)
        for _ in range(20):
            a, b = rng.normal(size=6), rng.normal(size=6)
            assert fn(candidate(1, a, b)) >= 0.0, name
            assert fn(candidate(1, a, a.copy())) == pytest.approx(0.0, abs=1e-9), name


def test_criteria_accept_torch_tensors_of_any_dtype():
    pose = torch.tensor([0.5, 0, 0, 0, 0, 0], dtype=torch.float16)
    prev = torch.zeros(6, dtype=torch.bfloat16)
    value = criteria.action_consistency(SimpleNamespace(pose=pose, prev_pose=prev))
    assert value == pytest.approx(0.5 / math.sqrt(6), rel=1e-3)


def test_unknown_criterion_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown exit criterion 'telepathy'.*action_consistency"):
        criteria.get_criterion("telepathy")


def test_mismatched_sizes_are_refused():
    with pytest.raises(ValueError, match="different sizes"):
        criteria.action_consistency(candidate(1, np.zeros(6), np.zeros(7)))
