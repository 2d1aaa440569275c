"""launch/calvin_demo.launch.py under launch_pytest: the real launch file, both real nodes, over DDS.

launch_pytest and launch_ros are not on PyPI. `colcon test` on a ROS 2 install runs these tests; so does a venv
with ros2/launch and ros2/launch_ros built from source (docs/ros_tools.md). Elsewhere they skip with that reason;
test/ros/ covers the nodes themselves by starting the executables (test/conftest.py).
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REASON = ("needs launch_pytest and launch_ros (a ROS 2 install, or ros2/launch + ros2/launch_ros from source: "
          "docs/ros_tools.md)")
launch_pytest = pytest.importorskip("launch_pytest", reason=REASON)
pytest.importorskip("launch_ros", reason=REASON)

from launch import LaunchDescription  # noqa: E402
from launch.actions import IncludeLaunchDescription, RegisterEventHandler, SetEnvironmentVariable  # noqa: E402
from launch.event_handlers import OnProcessStart  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402

DEMO = Path(__file__).resolve().parents[2] / "launch" / "calvin_demo.launch.py"
FRAMES = 24
NODES = ("calvin_bridge_node", "deer_policy_node")
pytestmark = pytest.mark.ros


def _demo(started: list, ros_domain: int, **arguments: str) -> LaunchDescription:
    """The demo launch file as a user runs it, in the test's ROS domain; `started` collects its processes."""
    return LaunchDescription([
        SetEnvironmentVariable("ROS_DOMAIN_ID", str(ros_domain)),
        RegisterEventHandler(OnProcessStart(on_start=lambda event, context: started.append(event.action))),
        IncludeLaunchDescription(PythonLaunchDescriptionSource(str(DEMO)),
                                 launch_arguments={"cpu_threads": "1", **arguments}.items()),
        launch_pytest.actions.ReadyToTest(),
    ])


def _by_executable(started: list) -> dict:
    return {next(n for n in NODES if n in action.name): action for action in started}


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def _all_exited(started: list) -> bool:
    return len(started) == len(NODES) and all(a.return_code is not None for a in started)


@pytest.fixture
def started() -> list:
    return []


@pytest.fixture
def report(tmp_path: Path) -> Path:
    return tmp_path / "evaluation.json"


@launch_pytest.fixture
def one_pass(started, report, ros_domain):
    return _demo(started, ros_domain, max_frames=str(FRAMES), exit_when_done="true", report_path=str(report),
                 flops_budget="0.004")


@pytest.mark.launch(fixture=one_pass)
def test_one_lockstep_pass_then_the_bridge_ends_the_whole_launch(started, report):
    # exit_when_done: the bridge exits after its pass, and its on_exit shuts the launch down (the policy too)
    _wait(lambda: _all_exited(started), 300, "both nodes to exit")
    yield
    codes = {name: action.return_code for name, action in _by_executable(started).items()}
    assert codes == {"calvin_bridge_node": 0, "deer_policy_node": 0}
    summary = json.loads(report.read_text())
    assert summary["bridge"]["frames_sent"] == FRAMES
    assert summary["bridge"]["unanswered"] == 0
    assert summary["overall"]["actions"] == FRAMES


@launch_pytest.fixture
def endless(started, ros_domain):
    return _demo(started, ros_domain, loop="true")


@pytest.mark.launch(fixture=endless)
def test_a_node_that_dies_takes_the_launch_down_with_it(started, client):
    from deer_ros.msg import EndEffectorAction

    actions = client.collect(EndEffectorAction, "action")
    client.spin_until(lambda: len(actions) >= 3, 300, "the policy to answer the bridge")  # both nodes are up
    nodes = _by_executable(started)
    os.kill(nodes["deer_policy_node"].process_details["pid"], signal.SIGKILL)  # a crash, not a clean exit
    _wait(lambda: _all_exited(started), 60, "the bridge to be stopped after the policy died")
    yield
    assert nodes["deer_policy_node"].return_code == -signal.SIGKILL
    assert nodes["calvin_bridge_node"].return_code == 0  # stopped by the launch's shutdown (SIGINT), cleanly


_RUN_LAUNCH = """
import sys
from launch import LaunchDescription, LaunchService
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource

arguments = [a.split(":=", 1) for a in sys.argv[2:]]
service = LaunchService()
service.include_launch_description(
    IncludeLaunchDescription(PythonLaunchDescriptionSource(sys.argv[1]), launch_arguments=arguments))
sys.exit(service.run())
"""


@pytest.mark.parametrize("argument,message", [
    ("flops_budget:=abc", "launch argument flops_budget:=abc is not a number"),
    ("lockstep:=maybe", "launch argument lockstep:=maybe is not a bool"),
    ("dtype:=fp8", "dtype='fp8' is not one of"),
])
def test_a_mistyped_argument_stops_the_launch_before_any_node_starts(argument, message, ros_domain):
    env = {**os.environ, "ROS_DOMAIN_ID": str(ros_domain)}
    done = subprocess.run([sys.executable, "-c", _RUN_LAUNCH, str(DEMO), argument], capture_output=True,
                          text=True, timeout=120, env=env, stdin=subprocess.DEVNULL)
    out = done.stdout + done.stderr
    assert done.returncode != 0
    assert message in out
    assert "process started" not in out  # launch logs this for every process it starts: none was
