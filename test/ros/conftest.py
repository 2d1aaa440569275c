"""Fixtures of the deer_policy tests: a running policy process, driven by the test's PolicyClient."""
from __future__ import annotations

import pytest

from deer_ros.ros.client import PolicyClient


@pytest.fixture
def policy(launch_node, client) -> PolicyClient:
    """deer_policy_node under sim time, its cameras subscribed, the instruction 'open the drawer' applied; the
    client, with the node's process as `proc`."""
    proc = launch_node("deer_policy_node", params={"use_sim_time": True, "diagnostics_period_s": 0.2})
    client.proc = proc
    client.wait_for_policy()
    client.instruct("open the drawer")
    return client
