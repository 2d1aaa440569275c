"""The DeeR policy alone, on a robot: remap its cameras and choose the model and the compute budget.

  ros2 launch deer_ros robot.launch.py static_image:=/front_cam/color/image_raw \
      gripper_image:=/wrist_cam/color/image_raw model:=of3b checkpoint:=/models/deer_d.pth \
      calibration:=/models/deer_d_calib.npz device:=cuda dtype:=bf16 flops_budget:=8.0
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    params_file = PathJoinSubstitution([FindPackageShare("deer_ros"), "config", "deer_policy.yaml"])
    arguments = [
        DeclareLaunchArgument("namespace", default_value="", description="namespace for all topics"),
        DeclareLaunchArgument("static_image", default_value="camera/static/image_raw"),
        DeclareLaunchArgument("gripper_image", default_value="camera/gripper/image_raw"),
        DeclareLaunchArgument("instruction", default_value="instruction"),
        DeclareLaunchArgument("action", default_value="action"),
        DeclareLaunchArgument("model", default_value="tiny", description="tiny, of3b or of9b"),
        DeclareLaunchArgument("checkpoint", default_value="", description="checkpoint file"),
        DeclareLaunchArgument("calibration", default_value="", description="calibration file"),
        DeclareLaunchArgument("device", default_value="cpu", description="cpu or cuda[:N]"),
        DeclareLaunchArgument("dtype", default_value="fp32", description="fp32, fp16, bf16 or int8"),
        DeclareLaunchArgument("flops_budget", default_value="0.0", description="average LLM GFLOPs per action"),
        DeclareLaunchArgument("max_exit", default_value="0", description="highest exit; 0 = all"),
        DeclareLaunchArgument("use_sim_time", default_value="false"),
    ]
    policy = Node(
        package="deer_ros",
        executable="deer_policy_node",
        name="deer_policy",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        parameters=[
            params_file,
            {
                "model": LaunchConfiguration("model"),
                "checkpoint": LaunchConfiguration("checkpoint"),
                "calibration": LaunchConfiguration("calibration"),
                "device": LaunchConfiguration("device"),
                "dtype": LaunchConfiguration("dtype"),
                "flops_budget": ParameterValue(LaunchConfiguration("flops_budget"), value_type=float),
                "max_exit": ParameterValue(LaunchConfiguration("max_exit"), value_type=int),
                "use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool),
            },
        ],
        remappings=[
            ("camera/static/image_raw", LaunchConfiguration("static_image")),
            ("camera/gripper/image_raw", LaunchConfiguration("gripper_image")),
            ("instruction", LaunchConfiguration("instruction")),
            ("action", LaunchConfiguration("action")),
        ],
    )
    return LaunchDescription([*arguments, policy])
