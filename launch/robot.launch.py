"""The DeeR policy alone, on a robot: remap its cameras and choose the model and the compute budget.

  ros2 launch deer_ros robot.launch.py static_image:=/front_cam/color/image_raw \
      gripper_image:=/wrist_cam/color/image_raw model:=of3b checkpoint:=/models/deer_d.pt \
      calibration:=/models/deer_d_calibration.npz device:=cuda dtype:=bf16 flops_budget:=8.0
  ros2 launch deer_ros robot.launch.py params_file:=/robot/config/deer_policy.yaml namespace:=arm1
  ros2 launch deer_ros robot.launch.py --show-args

Every parameter of the node is an argument (empty = the value in `params_file`, by default the bundled
config/deer_policy.yaml). A checkpoint without `calibration` uses `<checkpoint stem>_calibration.npz` beside
it when that exists. Arguments are checked before the node starts; the launch ends when the node exits.
"""
from launch import LaunchDescription

from deer_ros.ros.launch_args import policy_launch
from deer_ros.ros.launch_nodes import LaunchedNode, Remap, deer_launch_description


def generate_launch_description() -> LaunchDescription:
    remaps = (
        Remap("camera/static/image_raw", "static_image", "Static (third-person) camera topic, sensor_msgs/Image."),
        Remap("camera/gripper/image_raw", "gripper_image", "Gripper (wrist) camera topic, sensor_msgs/Image."),
        Remap("instruction", "instruction", "Language instruction topic, std_msgs/String (latched)."),
        Remap("action", "action", "Output topic, deer_ros/msg/EndEffectorAction."),
    )
    return deer_launch_description([LaunchedNode(policy_launch(), remaps=remaps, namespace_argument="namespace")])
