"""The ROS benchmarks run in the caller's ROS_DOMAIN_ID when one is set, as the test suite does."""
from __future__ import annotations

import pytest

from deer_ros.bench.ros_bench import ros_session

pytestmark = pytest.mark.ros


def test_a_domain_set_by_the_caller_is_used_by_the_client_and_the_nodes(monkeypatch, tmp_path):
    monkeypatch.setenv("ROS_DOMAIN_ID", "57")
    with ros_session(tmp_path) as (client, nodes):
        assert client.context.get_domain_id() == 57
        assert nodes.env["ROS_DOMAIN_ID"] == "57"


def test_without_one_each_run_gets_a_domain_of_its_own(monkeypatch, tmp_path):
    monkeypatch.delenv("ROS_DOMAIN_ID", raising=False)
    with ros_session(tmp_path) as (client, nodes):
        domain = client.context.get_domain_id()
        assert 101 <= domain <= 232 and nodes.env["ROS_DOMAIN_ID"] == str(domain)


def test_a_bad_domain_is_refused_before_anything_starts(monkeypatch, tmp_path):
    monkeypatch.setenv("ROS_DOMAIN_ID", "robot")
    with pytest.raises(ValueError, match="ROS_DOMAIN_ID='robot' is not a ROS domain"):
        with ros_session(tmp_path / "logs"):
            pass
    assert not (tmp_path / "logs").exists()
