"""The DeeR policy evaluated in the live CALVIN simulator (calvin_env, installed from source: docs/calvin.md).

  ros2 launch deer_ros calvin_sim.launch.py num_chains:=10 report_path:=/tmp/lh_mtlc.json
  ros2 launch deer_ros calvin_sim.launch.py dataset:=/data/task_D_D eval_sequences:=/data/eval_sequences.json
  ros2 launch deer_ros calvin_sim.launch.py sim_start:=episodes segments:=0,1 report_path:=/tmp/episodes.json

The bridge runs the chains (or the recorded episodes) once, writes the report and exits; the launch then shuts
down the policy too. A node that dies ends the whole launch.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    config = PathJoinSubstitution([FindPackageShare("deer_ros"), "config"])
    arguments = [
        DeclareLaunchArgument("dataset", default_value="",
                              description="CALVIN dataset root or split (its .hydra config builds the scene); "
                              "'' = the sample"),
        DeclareLaunchArgument("split", default_value="validation",
                              description="training or validation"),
        DeclareLaunchArgument("sim_start", default_value="chains",
                              description="chains (LH-MTLC) or episodes (recorded start states and tasks)"),
        DeclareLaunchArgument("eval_sequences", default_value="",
                              description="CALVIN's eval_sequences.json; '' = the standard 1000, generated"),
        DeclareLaunchArgument("num_chains", default_value="0",
                              description="run the first N chains; 0 = all"),
        DeclareLaunchArgument("segments", default_value="",
                              description="sim_start episodes: segment indices or task names; '' = all"),
        DeclareLaunchArgument("calvin_path", default_value="",
                              description="CALVIN checkout with the evaluation instructions; '' = packaged copy"),
        DeclareLaunchArgument("use_egl", default_value="false",
                              description="render with EGL on a GPU"),
        DeclareLaunchArgument("report_path", default_value="",
                              description="where to write the report JSON (and its .svg plot)"),
        DeclareLaunchArgument("max_frames", default_value="0",
                              description="stop after this many frames (partial report); 0 = no limit"),
        DeclareLaunchArgument("policy_timeout_s", default_value="60.0",
                              description="give up when the policy has not answered a frame for this long"),
        DeclareLaunchArgument("checkpoint", default_value="",
                              description="policy checkpoint; '' = the bundled demo model"),
        DeclareLaunchArgument("calibration", default_value="",
                              description="exit calibration for flops_budget; '' = the checkpoint's own"),
        DeclareLaunchArgument("flops_budget", default_value="0.0",
                              description="average LLM GFLOPs per action; 0 = no budget"),
        DeclareLaunchArgument("max_exit", default_value="0",
                              description="highest exit allowed; 0 = the last"),
        DeclareLaunchArgument("device", default_value="cpu",
                              description="torch device (cpu, cuda)"),
    ]
    bridge = Node(
        package="deer_ros",
        executable="calvin_bridge_node",
        name="calvin_bridge",
        output="screen",
        parameters=[
            PathJoinSubstitution([config, "calvin_bridge.yaml"]),
            {
                "mode": "sim",
                "exit_when_done": True,
                "dataset": LaunchConfiguration("dataset"),
                "split": LaunchConfiguration("split"),
                "sim_start": LaunchConfiguration("sim_start"),
                "eval_sequences": LaunchConfiguration("eval_sequences"),
                "num_chains": ParameterValue(LaunchConfiguration("num_chains"), value_type=int),
                "segments": LaunchConfiguration("segments"),
                "calvin_path": LaunchConfiguration("calvin_path"),
                "use_egl": ParameterValue(LaunchConfiguration("use_egl"), value_type=bool),
                "report_path": LaunchConfiguration("report_path"),
                "max_frames": ParameterValue(LaunchConfiguration("max_frames"), value_type=int),
                "policy_timeout_s": ParameterValue(LaunchConfiguration("policy_timeout_s"), value_type=float),
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
                "calibration": LaunchConfiguration("calibration"),
                "flops_budget": ParameterValue(LaunchConfiguration("flops_budget"), value_type=float),
                "max_exit": ParameterValue(LaunchConfiguration("max_exit"), value_type=int),
                "device": LaunchConfiguration("device"),
            },
        ],
    )
    # The evaluation is over when the bridge exits; a policy that dies ends it too.
    shutdown = [RegisterEventHandler(OnProcessExit(target_action=node, on_exit=[EmitEvent(event=Shutdown())]))
                for node in (bridge, policy)]
    return LaunchDescription([*arguments, bridge, policy, *shutdown])
