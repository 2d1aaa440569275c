"""The demo launch file under launch_pytest, for machines with a full ROS 2 install (colcon test).

Here (ROS 2 from pip) `launch_pytest` cannot be installed, so this module is skipped; test/ros/ runs the same
checks by starting the executables itself (test/conftest.py).
"""
import pytest

launch_pytest = pytest.importorskip(
    "launch_pytest", reason="launch_pytest is not installable from pip; needs a ROS 2 install (colcon test)")

import launch  # noqa: E402
import rclpy  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from launch_ros.substitutions import FindPackageShare  # noqa: E402
from launch.substitutions import PathJoinSubstitution  # noqa: E402

from deer_ros.msg import EndEffectorAction  # noqa: E402


@launch_pytest.fixture
def demo():
    source = PythonLaunchDescriptionSource(
        PathJoinSubstitution([FindPackageShare("deer_ros"), "launch", "calvin_demo.launch.py"]))
    return launch.LaunchDescription([IncludeLaunchDescription(source), launch_pytest.actions.ReadyToTest()])


@pytest.mark.launch(fixture=demo)
def test_policy_answers_the_bridge_in_lockstep():
    rclpy.init()
    node = rclpy.create_node("launch_test_probe")
    actions = []
    node.create_subscription(EndEffectorAction, "action", actions.append, 10)
    try:
        for _ in range(600):
            rclpy.spin_once(node, timeout_sec=0.1)
            if len(actions) >= 5:
                break
        assert len(actions) >= 5
        assert all(1 <= a.exit_index and a.layers >= 1 for a in actions)
    finally:
        node.destroy_node()
        rclpy.shutdown()


@pytest.mark.launch(fixture=demo, shutdown=True)
def test_nodes_exit_cleanly(proc_info):
    import launch_testing.asserts

    # SIGINT from the launch shutdown: 0 from our mains, -2 if a process died of the signal itself.
    launch_testing.asserts.assertExitCodes(proc_info, allowable_exit_codes=[0, -2])
