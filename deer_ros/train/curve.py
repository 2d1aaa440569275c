"""The accuracy-compute curve (the DeeR paper's Figure 3 in miniature): `deer-ros train curve`.

On held-out CALVIN episodes (open loop: the policy sees the recorded frames and its action is compared with the
recorded `rel_actions`), the action error of
  static   the model cut at each exit k (every step runs exactly to exit k: the DeeR-S/B style baselines)
  dynamic  the DeeR exit rule under average budgets between the first and last exit's cost; thresholds are
           solved on the calibration file (made on the training split), so the budget is met on the training
           data and only approximately on the held-out data: the x axis is the GFLOPs actually spent there
against the average LLM GFLOPs per action. The LSTM history is reset at every segment and carried within it,
exactly as at run time. Writes <name>.png, <name>.md (a table) and <name>.json into --out-dir.

Action error = RMSE over the 6 pose values in CALVIN's scaled units (1 = 2 cm or 0.05 rad); translation and
rotation RMSE and gripper agreement are in the table too.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from deer_ros.calvin.replay import ReplaySegment, load_segments, open_loop
from deer_ros.cli_options import add_deprecated_alias
from deer_ros.dependencies import pyplot


@dataclass
class CurvePoint:
    kind: str  # 'static' or 'dynamic'
    label: str  # 'exit 2' or 'budget 0.0123'
    gflops: float  # mean LLM GFLOPs per action actually spent
    pose_rmse: float  # RMSE of the 6 pose values (scaled units)
    translation_rmse: float
    rotation_rmse: float
    gripper_agreement: float
    mean_layers: float
    exit_histogram: dict[str, int]
    budget: float | None = None  # requested average GFLOPs (dynamic)


def evaluate(policy, segments: Sequence[ReplaySegment], decide) -> dict[str, Any]:
    """Open-loop metrics of `policy` with exit decider `decide` over `segments` (reset at each segment)."""
    return open_loop(policy, segments, decide).to_json()["overall"]


def _point(kind: str, label: str, m: dict[str, Any], budget: float | None = None) -> CurvePoint:
    return CurvePoint(kind, label, m["mean_gflops"], m["pose_rmse"], m["translation_rmse"], m["rotation_rmse"],
                      m["gripper_agreement"], m["mean_layers"], m["exit_histogram"], budget)


def budgets_between(exit_gflops: np.ndarray, n: int) -> list[float]:
    """`n` average budgets spread strictly between the first and the last exit's cost."""
    lo, hi = float(exit_gflops[0]), float(exit_gflops[-1])
    return [lo + (hi - lo) * (i + 1) / (n + 1) for i in range(n)]


def accuracy_compute_curve(policy, segments: Sequence[ReplaySegment], calibration, n_budgets: int = 8,
                           criterion: str = "action_consistency") -> list[CurvePoint]:
    """Static points (one per exit), then dynamic points (one per budget)."""
    from deer_ros.exits.controller import ExitController, FixedExit
    from deer_ros.exits.solver import solve_budget

    points = [_point("static", f"exit {e.index}", evaluate(policy, segments, FixedExit(e.index)))
              for e in policy.exits]
    cal = calibration.for_exits([e.layers for e in policy.exits])
    values = cal.criterion_values(criterion)
    for budget in budgets_between(cal.exit_gflops, n_budgets):
        solution = solve_budget(values, cal.exit_gflops, budget)
        decide = ExitController(criterion, solution.thresholds)
        points.append(_point("dynamic", f"budget {budget:.4g}", evaluate(policy, segments, decide), budget))
    return points


def constant_baseline(segments: Sequence[ReplaySegment]) -> float:
    """Pose RMSE of the best input-blind constant action: the split's own mean pose (a no-information floor)."""
    poses = np.array([f.action[:6] for s in segments for f in s.frames], dtype=np.float64)  # (N, 6)
    return float(np.sqrt(np.mean((poses - poses.mean(axis=0)) ** 2)))


def static_error_at(points: Sequence[CurvePoint], gflops: float) -> float:
    """The static curve's error at `gflops`, linearly interpolated between the exits."""
    static = sorted((p for p in points if p.kind == "static"), key=lambda p: p.gflops)
    return float(np.interp(gflops, [p.gflops for p in static], [p.pose_rmse for p in static]))


def table(points: Sequence[CurvePoint]) -> str:
    """A markdown table of the points; dynamic rows also give the static curve's error at the same compute."""
    rows = ["| kind | point | budget GFLOPs | mean GFLOPs | mean layers | pose RMSE | static at same GFLOPs | "
            "transl. RMSE | rot. RMSE | gripper agree | exits used |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in points:
        budget = f"{p.budget:.5f}" if p.budget is not None else ""
        ref = f"{static_error_at(points, p.gflops):.4f}" if p.kind == "dynamic" else ""
        hist = " ".join(f"{k}:{v}" for k, v in p.exit_histogram.items())
        rows.append(f"| {p.kind} | {p.label} | {budget} | {p.gflops:.5f} | {p.mean_layers:.2f} | "
                    f"{p.pose_rmse:.4f} | {ref} | {p.translation_rmse:.4f} | {p.rotation_rmse:.4f} | "
                    f"{p.gripper_agreement:.3f} | {hist} |")
    return "\n".join(rows)


def plot(panels: dict[str, Sequence[CurvePoint]], baselines: dict[str, float], path: Path, title: str) -> Path:
    """One panel per split: the static exits (line + markers), the dynamic budgets and the constant baseline."""
    plt = pyplot("the accuracy-compute plot")

    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
    for ax, (name, points) in zip(axes[0], panels.items()):
        static = sorted((p for p in points if p.kind == "static"), key=lambda p: p.gflops)
        dynamic = sorted((p for p in points if p.kind == "dynamic"), key=lambda p: p.gflops)
        ax.plot([p.gflops for p in static], [p.pose_rmse for p in static], "s-", color="tab:gray",
                label="static: cut at exit k")
        for p in static:
            ax.annotate(p.label, (p.gflops, p.pose_rmse), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.plot([p.gflops for p in dynamic], [p.pose_rmse for p in dynamic], "o-", color="tab:blue",
                label="dynamic (DeeR) over budgets")
        ax.axhline(baselines[name], color="tab:red", ls="--", lw=1, label="best constant action (split mean)")
        ax.set_xlabel("average LLM GFLOPs per action")
        ax.set_ylabel("action error (pose RMSE, scaled units)")
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="deer-ros train curve", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", default="", help="checkpoint ('' = the bundled tiny demo checkpoint)")
    p.add_argument("--calibration", default="", help="calibration .npz ('' = the bundled demo calibration)")
    p.add_argument("--dataset", default="", help="CALVIN dataset root ('' = the bundled sample)")
    p.add_argument("--split", action="append", choices=("validation", "training"), default=None,
                   help="split(s) to evaluate, one plot panel each (default: validation, the held-out one)")
    p.add_argument("--budgets", type=int, default=8, help="number of dynamic budgets")
    p.add_argument("--criterion", default="action_consistency", help="exit criterion")
    p.add_argument("--out-dir", default="docs", help="where to write <name>.png/.md/.json")
    p.add_argument("--name", default="accuracy_compute", help="file name stem")
    p.add_argument("--cpu-threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    add_deprecated_alias(p, "--threads", "--cpu-threads", dest="cpu_threads", type=int)
    p.add_argument("--json", action="store_true", help="print the points as JSON")
    return p


def curve_main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.budgets < 1:
        print("deer-ros train curve: --budgets must be >= 1", file=sys.stderr)
        return 2
    import torch

    from deer_ros.calvin.dataset import CalvinDatasetError, CalvinSplit
    from deer_ros.exits.calibration import Calibration, CalibrationError
    from deer_ros.model.checkpoint import CheckpointError
    from deer_ros.model.factory import load_policy
    from deer_ros.paths import calvin_sample, demo_calibration, demo_checkpoint, split_folder

    if args.cpu_threads:
        torch.set_num_threads(args.cpu_threads)
    splits = args.split or ["validation"]
    checkpoint = Path(args.checkpoint) if args.checkpoint else demo_checkpoint()
    try:
        policy = load_policy(checkpoint=checkpoint, preset=None)
        calibration = Calibration.load(args.calibration or demo_calibration())
        panels, baselines = {}, {}
        for split_name in splits:
            split = CalvinSplit(split_folder(args.dataset, split_name))
            segments = load_segments(split)
            points = accuracy_compute_curve(policy, segments, calibration, args.budgets, args.criterion)
            name = f"{split_name} ({len(segments)} episodes, {sum(len(s.frames) for s in segments)} frames)"
            panels[name], baselines[name] = points, constant_baseline(segments)
    except (CalvinDatasetError, CalibrationError, CheckpointError, FileNotFoundError, ValueError) as exc:
        print(f"deer-ros train curve: {exc}", file=sys.stderr)
        return 1
    out_dir = Path(args.out_dir)
    title = f"{policy.config.name} model {checkpoint.name}: action error vs LLM compute (open loop)"
    png = plot(panels, baselines, out_dir / f"{args.name}.png", title)
    md = "\n\n".join(f"### {name}\n\nBest constant action (the split's mean pose): pose RMSE "
                       f"{baselines[name]:.4f}.\n\n{table(points)}" for name, points in panels.items())
    (out_dir / f"{args.name}.md").write_text(f"# {title}\n\n{md}\n")
    data = {"checkpoint": str(checkpoint), "dataset": args.dataset or str(calvin_sample()),
            "criterion": args.criterion, "constant_baseline_pose_rmse": baselines,
            "panels": {k: [asdict(p) for p in v] for k, v in panels.items()}}
    (out_dir / f"{args.name}.json").write_text(json.dumps(data, indent=2))
    print(json.dumps(data, indent=2) if args.json else f"{md}\n\nwrote {png}, {out_dir / args.name}.md/.json")
    return 0


if __name__ == "__main__":
    sys.exit(curve_main())
