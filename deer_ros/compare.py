"""`deer-ros compare`: the same observations under two (or more) compute budgets, over ROS.

For each budget a fresh `deer_policy_node` (flops_budget = the budget, sim time) and a `calvin_bridge_node` in
lockstep play SOURCE (a rosbag2 bag or a CALVIN split) in a ROS domain of their own, so every run answers exactly
the same frames with exactly the same stamps; the actions are collected here by stamp. The table gives, per
budget, the frames answered, the compute spent (mean GFLOPs and layers, exits chosen), the actions' difference
from the reference run (the one that spent the most GFLOPs) and from the recorded actions (when the source has
them). The plot shows the difference from the reference against the GFLOPs saved.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deer_ros.calvin.evaluation import action_metrics
from deer_ros.dependencies import MissingDependency, pyplot


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="deer-ros compare", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("source", help="rosbag2 bag (folder or .mcap/.db3) or CALVIN split folder / dataset root")
    p.add_argument("--budgets", required=True, help="flops_budget values (average LLM GFLOPs per action), "
                   "comma-separated, at least two; 0 = no budget (every allowed exit)")
    p.add_argument("--split", default="validation", choices=("training", "validation"),
                   help="split of a CALVIN dataset root (not used for a bag)")
    p.add_argument("--segments", default="", help="segment indices or task ids, comma-separated ('' = all)")
    p.add_argument("--max-frames", type=int, default=0, help="stop each run after this many frames (0 = all)")
    p.add_argument("--bag-topics", default="", help="bag: ROLE=TOPIC overrides (static, gripper, instruction, "
                   "action), as the bridge's bag_topics; 'action=' for a bag without recorded actions")
    p.add_argument("--checkpoint", default="", help="policy model folder (default: the bundled demo model)")
    p.add_argument("--model", default="tiny", help="model preset of the checkpoint")
    p.add_argument("--calibration", default="", help="calibration file ('' = the model folder's)")
    p.add_argument("--cpu-threads", type=int, default=1, help="torch threads of the policy (0 = one per core)")
    p.add_argument("--plot", default="compare.png", help="where to write the plot (.png / .svg)")
    p.add_argument("--report", default="", help="also write the numbers as JSON here")
    p.add_argument("--timeout", type=float, default=900.0, help="give up on a run after this many seconds")
    p.add_argument("--json", action="store_true", help="print the numbers as JSON instead of the table")
    return p


@dataclass
class Run:
    """One budget's run: its actions by frame stamp (first answer per frame) and the bridge's report."""

    budget: float
    actions: dict[int, dict] = field(default_factory=dict)  # stamp -> action (7,), exit_index, layers, gflops
    report: dict = field(default_factory=dict)

    def arrays(self, stamps: list[int]) -> tuple[np.ndarray, ...]:
        rows = [self.actions[s] for s in stamps]
        return (np.array([r["action"] for r in rows]).reshape(-1, 7), np.array([r["exit_index"] for r in rows]),
                np.array([r["layers"] for r in rows]), np.array([r["gflops"] for r in rows]))


def parse_budgets(text: str) -> list[float]:
    try:
        budgets = [float(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise ValueError(f"--budgets {text!r}: give numbers (GFLOPs), comma-separated, e.g. 0.003,0.005") from None
    if len(budgets) < 2 or len(set(budgets)) != len(budgets) or any(b < 0 or not np.isfinite(b) for b in budgets):
        raise ValueError(f"--budgets {text!r}: give at least two different budgets >= 0")
    return budgets


def run_budget(args: argparse.Namespace, budget: float, log_dir: Path) -> Run:
    """Bridge + policy over DDS for one budget (deer_ros.bench.ros_bench's session: own domain, logs kept)."""
    from deer_ros.bench.ros_bench import ros_session
    from deer_ros.msg import EndEffectorAction

    run = Run(budget)
    report = log_dir / "evaluation.json"

    def on_action(msg: EndEffectorAction) -> None:
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        run.actions.setdefault(stamp, {"action": [*msg.translation, *msg.rotation, msg.gripper],
                                       "exit_index": int(msg.exit_index), "layers": int(msg.layers),
                                       "gflops": float(msg.gflops)})

    with ros_session(log_dir, threads=args.cpu_threads) as (listener, nodes):
        listener.node.create_subscription(EndEffectorAction, "action", on_action, 100)
        policy = nodes.start("deer_policy_node", {
            "use_sim_time": True, "flops_budget": budget, "checkpoint": args.checkpoint, "model": args.model,
            "calibration": args.calibration, "cpu_threads": args.cpu_threads})
        bridge = nodes.start("calvin_bridge_node", {
            "dataset": str(args.source), "split": args.split, "segments": args.segments,
            "max_frames": args.max_frames, "bag_topics": args.bag_topics, "lockstep": True,
            "report_path": str(report), "exit_when_done": True})
        listener.spin_until(lambda: not bridge.running or not policy.running, args.timeout,
                            f"the replay at flops_budget {budget}")
        listener.spin_for(0.5)  # the last action reaches this listener too
        code = bridge.proc.returncode
        failed = code != 0 or not report.exists()
        if failed:
            log = policy.output()[-3000:] if not policy.running else bridge.output()[-3000:]
            raise RuntimeError(f"run at flops_budget {budget} failed (calvin_bridge exit {code}; logs in "
                               f"{log_dir}):\n{log}")
    run.report = json.loads(report.read_text())
    return run


def compare(runs: list[Run]) -> dict:
    """Per run: frames, compute, and the action difference from the reference run and from the recorded ones,
    over the frames every run answered."""
    reference = max(runs, key=lambda r: np.mean([a["gflops"] for a in r.actions.values()]))
    stamps = sorted(set.intersection(*(set(r.actions) for r in runs)))
    if not stamps:
        raise RuntimeError("the runs answered no common frame; nothing to compare")
    ref_actions = reference.arrays(stamps)[0]
    rows = []
    for run in runs:
        actions, exits, layers, gflops = run.arrays(stamps)
        vs_ref = action_metrics(actions, ref_actions, exits, layers, gflops)
        overall, bridge = run.report.get("overall", {}), run.report.get("bridge", {})
        rows.append({"flops_budget": run.budget, "reference": run is reference,
                     "frames_sent": bridge.get("frames_sent"),
                     "answered": len(run.actions), "unanswered": bridge.get("unanswered"),
                     "mean_gflops": vs_ref["mean_gflops"], "mean_layers": vs_ref["mean_layers"],
                     "exit_histogram": vs_ref["exit_histogram"],
                     "vs_reference": {k: vs_ref[k] for k in ("translation_rmse", "rotation_rmse", "gripper_agreement")},
                     "vs_recorded": {k: overall[k] for k in ("translation_rmse", "rotation_rmse", "gripper_agreement")
                                     if k in overall}})
    ref_gflops = next(r["mean_gflops"] for r in rows if r["reference"])
    for row in rows:
        row["gflops_saved"] = ref_gflops - row["mean_gflops"]
        row["gflops_saved_pct"] = 100.0 * row["gflops_saved"] / ref_gflops if ref_gflops else 0.0
    return {"frames_compared": len(stamps), "runs": rows}


def format_table(result: dict, source: str) -> str:
    lines = [f"deer-ros compare: {source}, {result['frames_compared']} frames answered in every run "
             "(reference = the run that spent the most GFLOPs)",
             f"{'budget':>8} {'frames':>7} {'GFLOPs':>9} {'saved':>7} {'layers':>6}  {'exits':<18}"
             f"{'vs reference: trans':>20} {'rot':>8} {'grip':>5}  {'vs recorded: trans':>18} {'rot':>8} {'grip':>5}"]
    for r in result["runs"]:
        ref, rec = r["vs_reference"], r["vs_recorded"]
        exits = " ".join(f"{k}:{v}" for k, v in r["exit_histogram"].items())
        recorded = (f"{rec['translation_rmse']:>18.4g} {rec['rotation_rmse']:>8.4g} {rec['gripper_agreement']:>5.2f}"
                    if rec else f"{'(no recorded actions)':>33}")
        lines.append(f"{r['flops_budget']:>8.4g} {r['answered']:>7} {r['mean_gflops']:>9.4g} "
                     f"{r['gflops_saved_pct']:>6.1f}% {r['mean_layers']:>6.2f}  {exits:<18}"
                     f"{ref['translation_rmse']:>20.4g} {ref['rotation_rmse']:>8.4g} {ref['gripper_agreement']:>5.2f}  "
                     f"{recorded}" + ("  (reference)" if r["reference"] else ""))
    lines.append("trans / rot: RMSE of the scaled relative action (x0.02 m / x0.05 rad per unit); grip: share of "
                 "equal gripper commands")
    return "\n".join(lines)


def plot(result: dict, path: Path, source: str) -> Path:
    plt = pyplot("the budget comparison plot")
    runs = sorted(result["runs"], key=lambda r: r["gflops_saved"])
    saved = [r["gflops_saved_pct"] for r in runs]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for key, label, marker in (("translation_rmse", "translation RMSE", "o"), ("rotation_rmse", "rotation RMSE", "s")):
        ax.plot(saved, [r["vs_reference"][key] for r in runs], marker=marker, label=f"{label} vs reference run")
        if all(r["vs_recorded"] for r in runs):
            ax.plot(saved, [r["vs_recorded"][key] for r in runs], marker=marker, linestyle="--",
                    label=f"{label} vs recorded")
    for r, x in zip(runs, saved):
        ax.annotate(f"budget {r['flops_budget']:g}", (x, r["vs_reference"]["translation_rmse"]),
                    textcoords="offset points", xytext=(4, 6), fontsize=8)
    ax.set_xlabel("mean LLM GFLOPs per action saved vs the reference run (%)")
    ax.set_ylabel("action difference (scaled units)")
    ax.set_title(f"{Path(source).name}: {result['frames_compared']} frames", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def compare_main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        budgets = parse_budgets(args.budgets)
        plot_path = Path(args.plot).expanduser()
        if plot_path.suffix not in (".png", ".svg", ".pdf"):
            raise ValueError(f"--plot {plot_path}: give a .png, .svg or .pdf file")
        pyplot("the budget comparison plot")  # a missing matplotlib is found before any run
        from deer_ros.bag.reader import open_split

        # A source the bridge cannot play is found here, before a policy is started for it.
        open_split(args.source, args.split, args.bag_topics).segments(args.segments)
        work = Path(tempfile.mkdtemp(prefix="deer_ros_compare_"))
        runs = []
        for i, budget in enumerate(budgets):
            print(f"run {i + 1}/{len(budgets)}: flops_budget {budget:g} (logs in {work / f'run{i}'})",
                  file=sys.stderr)
            runs.append(run_budget(args, budget, work / f"run{i}"))
        result = compare(runs)
    except (ValueError, RuntimeError, TimeoutError, MissingDependency) as exc:  # CalvinDatasetError: a ValueError
        print(f"deer-ros compare: {exc}", file=sys.stderr)
        return 1
    result.update(source=str(args.source), plot=str(plot(result, plot_path, args.source)))
    if args.report:
        Path(args.report).expanduser().write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2) if args.json else format_table(result, args.source)
          + f"\nplot: {result['plot']}")
    return 0
