"""Shared test fixtures: a ROS domain per test, node executables run as processes, and an in-test probe node.

This is what launch_pytest does on a full ROS 2 install (see test/launch/ for the same checks written with it):
start the real executables, wait for their topics, exchange messages over DDS, stop them and check that they
exited cleanly.
"""
from __future__ import annotations

import random
import signal
import time
from pathlib import Path
from typing import Callable

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "calvin_sample"


@pytest.fixture
def ros_domain() -> int:
    """A ROS_DOMAIN_ID of its own for each test, so tests (and parallel runs) do not hear each other."""
    return random.SystemRandom().randint(1, 200)


class Probe:
    """An rclpy node living in the test process, in the test's domain."""

    def __init__(self, domain_id: int) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node("test_probe", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def spin_until(self, condition: Callable[[], bool], timeout: float, what: str = "condition") -> None:
        """Spin until `condition()` holds; fail the test with `what` after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
            self.executor.spin_once(timeout_sec=0.05)

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.02)

    def collect(self, msg_type, topic: str, qos=10) -> list:
        """Subscribe and return the list that received messages are appended to."""
        received: list = []
        self.node.create_subscription(msg_type, topic, received.append, qos)
        return received

    def wait_for_publisher(self, topic: str, timeout: float = 30.0) -> None:
        self.spin_until(lambda: self.node.count_publishers(topic) > 0, timeout, f"a publisher on {topic}")

    def wait_for_subscriber(self, topic: str, timeout: float = 30.0) -> None:
        self.spin_until(lambda: self.node.count_subscribers(topic) > 0, timeout, f"a subscriber on {topic}")

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


@pytest.fixture
def probe(ros_domain):
    p = Probe(ros_domain)
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
