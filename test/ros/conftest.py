"""Fixtures of the deer_policy tests: a running policy process, driven by the probe (see policy_driver.py)."""
from __future__ import annotations

import pytest
from policy_driver import PolicyDriver


@pytest.fixture
def policy(launch_node, probe) -> PolicyDriver:
    """deer_policy_node under sim time, its cameras subscribed, the instruction 'open the drawer' applied."""
    proc = launch_node("deer_policy_node", params={"use_sim_time": True, "diagnostics_period_s": 0.2})
    driver = PolicyDriver(probe)
    driver.proc = proc
    driver.instruct("open the drawer")
    return driver
