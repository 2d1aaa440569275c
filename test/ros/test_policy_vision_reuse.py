"""Vision-token reuse through the node: parameters set at run time, reuse counted and described in /diagnostics."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.ros


def test_vision_reuse_is_off_by_default_and_switched_at_run_time(launch_node, client):
    proc = launch_node("deer_policy_node", params={"use_sim_time": True, "diagnostics_period_s": 0.2})
    policy = client
    policy.proc = proc
    policy.wait_for_policy()
    policy.instruct("open the drawer")
    for t in (1.0, 1.1, 1.2):  # the same images every step
        policy.act(t)
    policy.wait_count("steps", 3)
    counts = policy.counts()
    assert counts["vision_reuse"] == "off" and int(counts["vision_reused_static"]) == 0

    assert policy.set_parameter("vision_reuse_threshold_gripper", 2.0).successful
    assert policy.set_parameter("vision_reuse", True).successful
    for t in (2.0, 2.1, 2.2, 2.3):
        policy.act(t)
    policy.wait_count("steps", 7)
    counts = policy.counts()
    assert counts["vision_reuse"].startswith("static change <= 2 for up to 3 steps; gripper change <= 2")
    # identical frames: the first step after the switch encodes, the next three reuse (max age 3)
    assert int(counts["vision_reused_static"]) == 3 and int(counts["vision_reused_gripper"]) == 3

    refused = policy.set_parameter("vision_reuse_threshold_static", 300.0)
    assert not refused.successful and "out of range" in refused.reason and "255" in refused.reason
    assert policy.set_parameter("vision_reuse", False).successful
    policy.act(3.0)
    policy.act(3.1)
    policy.wait_count("steps", 9)
    assert policy.counts()["vision_reuse"] == "off" and policy.count("vision_reused_static") == 3
