"""The CALVIN bridge replaying recorded episodes into the DeeR policy (no robot needed).

  ros2 launch deer_ros calvin_demo.launch.py
  ros2 launch deer_ros calvin_demo.launch.py dataset:=/data/task_D_D split:=validation flops_budget:=2.0
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    config = PathJoinSubstitution([FindPackageShare("deer_ros"), "config"])
    arguments = [
        DeclareLaunchArgument("dataset", default_value="", description="CALVIN dataset root; '' = bundled sample"),
        DeclareLaunchArgument("split", default_value="validation", description="training or validation"),
        DeclareLaunchArgument("lockstep", default_value="true", description="wait for each action"),
        DeclareLaunchArgument("flops_budget", default_value="0.0", description="average LLM GFLOPs per action"),
        DeclareLaunchArgument("checkpoint", default_value="", description="policy checkpoint; '' = demo model"),
    ]
    bridge = Node(
        package="deer_ros",
        executable="calvin_bridge_node",
        name="calvin_bridge",
        output="screen",
        parameters=[
            PathJoinSubstitution([config, "calvin_bridge.yaml"]),
            {
                "dataset": LaunchConfiguration("dataset"),
                "split": LaunchConfiguration("split"),
                "lockstep": ParameterValue(LaunchConfiguration("lockstep"), value_type=bool),
            },
        ],
    )
    policy = Node(
        package="deer_ros",
        executable="deer_policy_node",
        name="deer_policy",
        output="screen",
        parameters=[
            PathJoinSubstitution([config, "deer_policy.yaml"]),
            {
                "use_sim_time": True,
                "checkpoint": LaunchConfiguration("checkpoint"),
                "flops_budget": ParameterValue(LaunchConfiguration("flops_budget"), value_type=float),
            },
        ],
    )
    return LaunchDescription([*arguments, bridge, policy])
