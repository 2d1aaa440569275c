"""Checks shared by the test/ros tests on what a running deer_policy says."""
from __future__ import annotations

import numpy as np

from deer_ros.msg import EndEffectorAction
from deer_ros.ros.client import stamp_key


def exit_layers(log: str) -> dict[int, int]:
    """Exit index -> LLM layers, from the node's start-up line 'loaded ...; exits 1:2L/0.0016G, 2:4L/...'."""
    line = next(line for line in log.splitlines() if "; exits " in line)
    items = line.split("; exits ", 1)[1].split(";")[0].split(", ")
    return {int(item.split(":")[0]): int(item.split(":")[1].split("L")[0]) for item in items}


def assert_sane(action: EndEffectorAction, sent: set, exits: dict[int, int] | None = None) -> None:
    """An action is safe to execute: finite, in range, answers a sent observation, bookkeeping of a real exit
    (`exits`: exit index -> layers, see exit_layers)."""
    values = np.concatenate([action.translation, action.rotation, [action.gripper, action.gflops]])
    assert np.all(np.isfinite(values)), f"non-finite action {values}"
    assert np.all(np.abs(values[:6]) <= 1.0), f"pose delta out of [-1, 1]: {values[:6]}"
    assert action.gripper in (-1.0, 1.0), f"gripper {action.gripper}"
    assert stamp_key(action.header.stamp) in sent, f"action for a stamp never sent: {stamp_key(action.header.stamp)}"
    assert action.exit_index >= 1 and action.layers >= 1 and action.gflops > 0
    if exits is not None:
        assert exits.get(action.exit_index) == action.layers, \
            f"exit {action.exit_index} ran {action.layers} layers; the model's exits are {exits}"
