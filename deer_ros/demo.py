"""`deer-ros demo`: the CALVIN bridge replays the bundled real CALVIN sample into the policy node, in lockstep,
over DDS between two processes (what `ros2 launch deer_ros calvin_demo.launch.py` starts), then prints a summary.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

from deer_ros.paths import data_dir


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deer-ros demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="", help="CALVIN dataset root or split folder (default: bundled)")
    parser.add_argument("--split", default="validation", choices=("training", "validation"))
    parser.add_argument("--segments", default="", help="segment indices or task names, comma-separated")
    parser.add_argument("--max-frames", type=int, default=0, help="stop after this many frames (0 = all)")
    parser.add_argument("--flops-budget", type=float, default=0.0, help="average LLM GFLOPs per action")
    parser.add_argument("--checkpoint", default="", help="policy checkpoint (default: bundled demo model)")
    parser.add_argument("--model", default="tiny", help="model preset of the checkpoint")
    parser.add_argument("--cpu-threads", type=int, default=1,
                        help="torch threads of the policy (0 = one per core); 1 suits the tiny demo model")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up after this many seconds")
    parser.add_argument("--json", action="store_true", help="print the evaluation as JSON")
    parser.add_argument("--keep-logs", action="store_true", help="print the node logs at the end")
    return parser


def demo_main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from deer_ros.ros.launcher import NodeProcess, executable, ros_args, ros_env

    config = data_dir().parent / "config"
    work = Path(tempfile.mkdtemp(prefix="deer_ros_demo_"))
    report = work / "evaluation.json"
    env = ros_env(int(os.environ.get("ROS_DOMAIN_ID", random.randint(1, 200))))
    bridge_params = {"dataset": args.dataset, "split": args.split, "segments": args.segments,
                     "max_frames": args.max_frames, "report_path": str(report), "exit_when_done": True,
                     "lockstep": True}
    policy_params = {"use_sim_time": True, "flops_budget": args.flops_budget, "checkpoint": args.checkpoint,
                     "model": args.model, "cpu_threads": args.cpu_threads}
    t0 = time.monotonic()
    policy = NodeProcess("deer_policy", [executable("deer_policy_node"),
                                         *ros_args([config / "deer_policy.yaml"], policy_params)],
                         env, work / "deer_policy.log")
    bridge = NodeProcess("calvin_bridge", [executable("calvin_bridge_node"),
                                           *ros_args([config / "calvin_bridge.yaml"], bridge_params)],
                         env, work / "calvin_bridge.log")
    deadline = time.monotonic() + args.timeout
    # The bridge exits by itself after the last frame; a policy that dies first (bad checkpoint) ends the run.
    while bridge.running and policy.running and time.monotonic() < deadline:
        time.sleep(0.2)
    if bridge.running and not policy.running:
        print("deer_policy stopped before the replay finished", file=sys.stderr)
    bridge_code = bridge.wait(timeout=1) if not bridge.running else bridge.stop(signal.SIGINT)
    policy_code = policy.stop(signal.SIGINT)
    wall = time.monotonic() - t0
    if args.keep_logs or bridge_code != 0 or policy_code != 0 or not report.exists():
        for proc in (bridge, policy):
            print(f"----- {proc.name} log ({proc.log_path}) -----\n{proc.output()[-4000:]}", file=sys.stderr)
    if bridge_code != 0 or policy_code != 0 or not report.exists():
        print(f"demo failed: calvin_bridge exit {bridge_code}, deer_policy exit {policy_code}", file=sys.stderr)
        return 1
    summary = json.loads(report.read_text())
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_summary(summary, wall))
    return 0


def format_summary(summary: dict, wall_s: float) -> str:
    overall, bridge = summary["overall"], summary["bridge"]
    lines = [
        "deer_ros demo: calvin_bridge (replay, lockstep) -> deer_policy over DDS",
        f"  dataset          {bridge['dataset']}",
        f"  frames / actions {bridge['frames_sent']} / {overall.get('actions', 0)} "
        f"(unanswered {bridge['unanswered']}, re-sent {bridge['resends']})",
    ]
    for key, label in (("translation_rmse", "translation RMSE"), ("rotation_rmse", "rotation RMSE"),
                       ("gripper_agreement", "gripper agreement"), ("mean_layers", "mean LLM layers"),
                       ("mean_gflops", "mean LLM GFLOPs")):
        if key in overall:
            lines.append(f"  {label:<16} {overall[key]:.4g}")
    if "exit_histogram" in overall:
        lines.append(f"  exits            {overall['exit_histogram']}")
    lines.append(f"  segments         {len(summary.get('segments', []))}")
    lines.append(f"  wall time        {wall_s:.1f} s")
    return "\n".join(lines)
