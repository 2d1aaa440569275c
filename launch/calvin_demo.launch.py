"""The CALVIN bridge replaying recorded episodes into the DeeR policy (no robot needed).

  ros2 launch deer_ros calvin_demo.launch.py
  ros2 launch deer_ros calvin_demo.launch.py flops_budget:=0.004 loop:=true
  ros2 launch deer_ros calvin_demo.launch.py dataset:=/data/task_D_D model:=of3b checkpoint:=/models/deer.pt \
      device:=cuda dtype:=bf16 flops_budget:=6.0
  ros2 launch deer_ros calvin_demo.launch.py --show-args

Every parameter of both nodes is an argument (empty = the params file's value; `params_file` and
`bridge_params_file` choose the files). flops_budget is in LLM GFLOPs per action: from the first exit to the
last, the bundled tiny demo model spends 0.00232 to 0.00696, of3b 2.68 to 16.09 (`deer-ros flops --model
tiny`, `--model of3b`). A checkpoint without `calibration` uses a model folder's own calibration.npz, or for a
single file `<checkpoint stem>_calibration.npz` beside it (/models/deer_calibration.npz above). Arguments are
checked before any node starts; the launch ends when either node exits (exit_when_done:=true ends it after one
pass).
"""
from launch import LaunchDescription

from deer_ros.ros.launch_args import bridge_launch, policy_launch
from deer_ros.ros.launch_nodes import LaunchedNode, deer_launch_description


def generate_launch_description() -> LaunchDescription:
    return deer_launch_description([
        # the bridge is the source of sim time (/clock); the policy stamps and times out on it
        LaunchedNode(bridge_launch(), fixed={"use_sim_time": False}),
        LaunchedNode(policy_launch(), fixed={"use_sim_time": True}),
    ])
