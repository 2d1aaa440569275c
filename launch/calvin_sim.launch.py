"""The DeeR policy evaluated in the live CALVIN simulator (calvin_env, installed from source: docs/calvin.md).

  ros2 launch deer_ros calvin_sim.launch.py num_chains:=10 report_path:=/tmp/lh_mtlc.json
  ros2 launch deer_ros calvin_sim.launch.py dataset:=/data/task_D_D eval_sequences:=/data/eval_sequences.json
  ros2 launch deer_ros calvin_sim.launch.py sim_start:=episodes segments:=0,1 report_path:=/tmp/episodes.json
  ros2 launch deer_ros calvin_sim.launch.py --show-args

Every parameter of both nodes is an argument, as in calvin_demo.launch.py, checked before any node starts. The
bridge runs the chains (or the recorded episodes) once, writes the report and exits; the launch then shuts
down the policy too. A node that dies ends the whole launch.
"""
from launch import LaunchDescription

from deer_ros.ros.launch_args import bridge_launch, policy_launch
from deer_ros.ros.launch_nodes import LaunchedNode, deer_launch_description


def generate_launch_description() -> LaunchDescription:
    return deer_launch_description([
        # the simulator bridge is the source of sim time (/clock) and ends the launch after one evaluation
        LaunchedNode(bridge_launch(), fixed={"use_sim_time": False, "mode": "sim", "exit_when_done": True}),
        LaunchedNode(policy_launch(), fixed={"use_sim_time": True}),
    ])
