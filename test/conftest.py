"""Shared test fixtures: a ROS domain per test, node executables run as processes, and an in-test client node
(deer_ros.ros.client.PolicyClient).

This is what launch_pytest does on a full ROS 2 install (see test/launch/ for the same checks written with it):
start the real executables, wait for their topics, exchange messages over DDS, stop them and check that they
exited cleanly.
"""
from __future__ import annotations

import logging
import random
import signal
import sys

import pytest
from hypothesis import settings

# Property tests draw the same examples on every run (a CI failure reproduces on a laptop, and a new hypothesis
# release cannot turn CI red by trying new examples); `--hypothesis-profile=explore` searches afresh.
settings.register_profile("default", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile("default")

# ROS_DOMAIN_ID: unset, each test gets a random domain of its own (1..200), so tests and parallel runs on one
# machine do not hear each other. Set by the caller (a CI job, `colcon test` on a shared robot network), every
# test uses that domain instead and never another: the caller chose it to keep the tests off other domains.
# Tests then share the domain, which is safe because one pytest process runs them one after another (CMakeLists
# registers the suite as a single test) and each test stops its nodes before the next starts; do not run two
# test sessions at once in the same domain.


def _caller_domain() -> int | None:
    from deer_ros.ros.launcher import caller_domain

    try:
        return caller_domain()
    except ValueError as exc:  # a bad value stops the session before any test starts
        raise pytest.UsageError(f"{exc} (unset, each test gets a random domain)") from None


def pytest_configure(config: pytest.Config) -> None:
    _caller_domain()


def pytest_report_header(config: pytest.Config) -> str:
    domain = _caller_domain()
    return (f"ROS domain: {domain} (ROS_DOMAIN_ID, shared by every test)" if domain is not None
            else "ROS domain: random per test (ROS_DOMAIN_ID unset)")


@pytest.fixture(autouse=True)
def _deer_ros_logs_reach_caplog():
    """Importing `launch` (the launch_pytest plugin does, wherever it is installed) makes every logger created
    afterwards non-propagating (launch.logging.LaunchLogger), so caplog would miss deer_ros's warnings."""
    if "launch.logging" in sys.modules:
        for name, logger in list(logging.root.manager.loggerDict.items()):
            if name.startswith("deer_ros") and isinstance(logger, logging.Logger):
                logger.propagate = True


@pytest.fixture
def ros_domain() -> int:
    """The ROS_DOMAIN_ID of this test: the caller's, or a random one of its own."""
    domain = _caller_domain()
    return domain if domain is not None else random.SystemRandom().randint(1, 200)


@pytest.fixture
def client(ros_domain):
    """A PolicyClient (an rclpy node in the test process) in the test's domain; spin_until raises TimeoutError."""
    from deer_ros.ros.client import PolicyClient

    c = PolicyClient(ros_domain, "test_client")
    yield c
    c.close()


@pytest.fixture
def launch_node(ros_domain, tmp_path):
    """Factory: launch_node('deer_policy_node', params={...}) -> a running NodeProcess.

    At teardown every process still running gets SIGINT, and each must have exited with its
    `expected_exit_code` (0 unless a test set it) and printed no traceback.
    """
    from deer_ros.ros.launcher import NodeProcess, executable, ros_args, ros_env

    started = []

    def start(exe: str, params_files=(), params=None, remaps=None, name=None, namespace=None):
        if exe == "deer_policy_node":
            # the test process and other nodes share this machine's cores: one torch thread avoids spin-waits
            params = {"cpu_threads": 1, **(params or {})}
        argv = [executable(exe), *ros_args(params_files, params, remaps, name, namespace)]
        proc = NodeProcess(exe, argv, ros_env(ros_domain), tmp_path / f"{exe}-{len(started)}.log")
        started.append(proc)
        return proc

    yield start
    failures = []
    for proc in started:
        code = proc.stop(signal.SIGINT) if proc.running else proc.proc.returncode
        out = proc.output()
        if code != proc.expected_exit_code or "Traceback" in out:
            failures.append(f"{proc.name} exited with {code}:\n{out[-3000:]}")
    if failures:
        pytest.fail("\n\n".join(failures))
