"""Shared test fixtures: a ROS domain per test, node executables run as processes, and an in-test probe node.

This is what launch_pytest does on a full ROS 2 install (see test/launch/ for the same checks written with it):
start the real executables, wait for their topics, exchange messages over DDS, stop them and check that they
exited cleanly.
"""
from __future__ import annotations

import random
import signal

import pytest
from hypothesis import settings

# Property tests draw the same examples on every run (a CI failure reproduces on a laptop, and a new hypothesis
# release cannot turn CI red by trying new examples); `--hypothesis-profile=explore` searches afresh.
settings.register_profile("default", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile("default")


@pytest.fixture
def ros_domain() -> int:
    """A ROS_DOMAIN_ID of its own for each test, so tests (and parallel runs) do not hear each other."""
    return random.SystemRandom().randint(1, 200)


@pytest.fixture
def probe(ros_domain):
    """An rclpy node in the test process, in the test's domain (spin_until raises TimeoutError)."""
    from deer_ros.ros.probe import Probe

    p = Probe(ros_domain, "test_probe")
    yield p
    p.close()


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
