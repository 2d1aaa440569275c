"""Budget benchmark: requested vs realised LLM GFLOPs, on the calibration split and on a held-out split, with and
without online budget tracking; the exit distribution per budget as a PNG; solver timings on 100,000 samples.

    python -m deer_ros.bench.budget [--out DIR] [--checkpoint FOLDER | --random-weights] [--json]

The model runs closed loop over the recorded frames exactly as the policy node drives it (`deer_ros.calvin.replay`):
one `ExitBudget` (decider + tracker) per run, `record()` after every step, the history reset at every segment.
Default data: the bundled CALVIN sample, training = calibration, validation = held out (played `--passes`
times, so the tracker is judged over more than 200 steps).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from deer_ros.calvin.replay import ReplaySegment, load_segments, replay
from deer_ros.dependencies import pyplot
from deer_ros.exits import solver
from deer_ros.exits.bayes import OfflineEvaluator, search_thresholds
from deer_ros.exits.calibration import Calibration, collect_calibration
from deer_ros.exits.controller import BudgetSettings, ExitBudget
BUDGET_FRACTIONS = (0.15, 0.35, 0.5, 0.65, 0.85)  # of the way from the cheapest to the deepest exit


def load_policy(model: str, checkpoint: str, random_weights: bool, seed: int) -> tuple[Any, str]:
    """The policy to measure and a line saying what it is: the checkpoint ('' = the bundled demo model), or with
    `random_weights` a randomly initialised `model`. A checkpoint that does not exist is an error."""
    if random_weights:
        from deer_ros.bench.cli import Target, random_policy

        return random_policy(model, Target("cpu", "fp32"), seed), f"{model}, randomly initialised (seed {seed})"
    from deer_ros.model.factory import load_policy as load
    from deer_ros.model.factory import resolve_checkpoint

    path = resolve_checkpoint(checkpoint or None, model)
    return load(checkpoint=path, preset=model), f"{model} from {path}"


def online_search(policy: Any, calibration: Calibration, calib: list[ReplaySegment], heldout: list[ReplaySegment],
                  budget: float, criterion: str, calls: int, frames_per_segment: int, log: Path) -> dict[str, Any]:
    """DeeR w. online, offline flavour: search thresholds for the pose error on the calibration split's recorded
    actions under `budget`, starting from the solved ones; compare both on the held-out split."""
    start = solver.solve_budget(calibration.criterion_values(criterion), calibration.exit_gflops, budget).thresholds
    search_on = OfflineEvaluator(policy, [ReplaySegment(s.index, s.instruction, s.frames[:frames_per_segment])
                                          for s in calib], criterion)
    log.unlink(missing_ok=True)
    t0 = time.perf_counter()
    result = search_thresholds(search_on, start, budget, n_calls=calls, log_path=log)
    seconds = time.perf_counter() - t0
    check_on = OfflineEvaluator(policy, heldout, criterion)
    out = {"budget": budget, "calls": calls, "seconds": seconds, "log": str(log)}
    for name, thresholds in (("solved", start), ("searched", np.array(result.best.thresholds))):
        search_score, search_gflops = search_on(thresholds)
        score, gflops = check_on(thresholds)
        out[name] = {"thresholds": thresholds.tolist(), "search_pose_rmse": -search_score,
                     "search_gflops": search_gflops, "heldout_pose_rmse": -score, "heldout_gflops": gflops}
    return out


def run(policy: Any, segments: list[ReplaySegment], budget: ExitBudget, passes: int = 1) -> dict[str, Any]:
    """Drive the policy over the segments under `budget`; realised GFLOPs and exits per step."""
    gflops, exits = [], []
    for step in replay(policy, segments, budget.decider, passes):
        budget.record(step.result)
        gflops.append(float(step.result.gflops))
        exits.append(int(step.result.exit_index))
    return {"gflops": np.array(gflops), "exits": np.array(exits)}


DEER_B_GFLOPS = np.array([2.6, 5.2, 7.8, 10.4, 13.0, 15.6])  # DeeR-3B's 6 exits (deer-reference 2.5)


def solver_timings(n_exits: int = 6, gflops: np.ndarray = DEER_B_GFLOPS, n: int = 100_000,
                   repeats: int = 30) -> dict[str, float]:
    """Median and worst milliseconds of the solver on n synthetic samples (default: DeeR-3B's exits)."""
    rng = np.random.default_rng(0)
    values = rng.gamma(2.0, 0.01, size=(n_exits, n))
    budget = float(np.mean(gflops[[0, -1]]))
    jobs = {"solve_budget": lambda: solver.solve_budget(values, gflops, budget),
            "solve_exit_ratio": lambda: solver.solve_exit_ratio(values, 1.0, exit_gflops=gflops),
            "simulate": lambda: solver.simulate(values, np.full(n_exits, 0.02))}
    out = {}
    for name, job in jobs.items():
        job()
        ms = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            job()
            ms.append((time.perf_counter() - t0) * 1e3)
        out[f"{name}_median_ms"], out[f"{name}_max_ms"] = float(np.median(ms)), float(np.max(ms))
    return out


def plot(rows: list[dict], n_exits: int, path: Path) -> None:
    """Grouped bars: share of actions per exit, one bar per budget; calibration / held-out x tracking off / on."""
    plt = pyplot("the budget benchmark plot")

    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True, sharey=True)
    budgets = sorted({r["budget"] for r in rows})
    width = 0.8 / len(budgets)
    for ax, (split, tracking) in zip(axes.flat, [(s, t) for s in ("calibration", "held-out") for t in (False, True)]):
        for j, b in enumerate(budgets):
            row = next(r for r in rows if r["budget"] == b and r["split"] == split and r["tracking"] == tracking)
            ax.bar(np.arange(1, n_exits + 1) + (j - (len(budgets) - 1) / 2) * width, row["exit_shares"], width,
                   label=f"{b:.3g} -> {row['realised']:.3g} ({row['error_pct']:+.1f}%)")
        ax.set_title(f"{split} split, tracking {'on' if tracking else 'off'}")
        ax.set_xticks(np.arange(1, n_exits + 1))
        ax.legend(title="budget -> realised GFLOPs", fontsize=7, title_fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("exit")
    for ax in axes[:, 0]:
        ax.set_ylabel("share of actions")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(rows: list[dict]) -> str:
    lines = ["| budget GFLOPs | split | tracking | steps | realised GFLOPs | error | last 200 steps | worst 200-step "
             "window | all at last exit | steps the budget is out of reach | exits 1..n |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        shares = " ".join(f"{s:.2f}" for s in r["exit_shares"])
        lines.append(f"| {r['budget']:.4g} | {r['split']} | {'on' if r['tracking'] else 'off'} | {r['steps']} | "
                     f"{r['realised']:.4g} | {r['error_pct']:+.1f}% | {r['error_last200_pct']:+.1f}% | "
                     f"{r['worst_window200_pct']:.1f}% | "
                     f"{r['reachable_max']:.4g} | {100 * r['steps_above_deepest']:.0f}% | {shares} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from deer_ros.paths import calvin_sample

    p = argparse.ArgumentParser(prog="python -m deer_ros.bench.budget", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny")
    p.add_argument("--checkpoint", default="", help="model folder or checkpoint file ('' = the bundled demo model)")
    p.add_argument("--random-weights", action="store_true", help="measure a randomly initialised --model instead "
                   "of a checkpoint (seeded by --seed)")
    p.add_argument("--dataset", default=str(calvin_sample()), help="CALVIN dataset root")
    p.add_argument("--calibration-split", default="training")
    p.add_argument("--heldout-split", default="validation")
    p.add_argument("--passes", type=int, default=2, help="times the held-out split is played per run")
    p.add_argument("--criterion", default="action_consistency")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--search-calls", type=int, default=12, help="evaluations of the online threshold search at the "
                   "middle budget (0 = skip it)")
    p.add_argument("--search-frames", type=int, default=24, help="frames per calibration segment the search "
                   "replays per evaluation")
    p.add_argument("--out", default="out/bench_budget", help="folder for budget_exits.png and results.json")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    args = p.parse_args(argv)

    if args.random_weights and args.checkpoint:
        p.error("--random-weights measures a fresh model: give it or --checkpoint, not both")
    from deer_ros.calvin.dataset import CalvinDatasetError, CalvinSplit
    from deer_ros.model.checkpoint import CheckpointError

    root = Path(args.dataset).expanduser()
    try:
        policy, what = load_policy(args.model, args.checkpoint, args.random_weights, args.seed)
        calib_segments = load_segments(CalvinSplit(root / args.calibration_split))
        heldout_segments = load_segments(CalvinSplit(root / args.heldout_split))
    except (CalvinDatasetError, CheckpointError, FileNotFoundError, ValueError) as exc:
        print(f"{p.prog}: {exc}", file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    calibration = collect_calibration(policy, calib_segments, [args.criterion],
                                      {"model": args.model, "dataset": str(root), "split": args.calibration_split})
    calibrate_s = time.perf_counter() - t0
    g = calibration.exit_gflops
    nominal = np.array(calibration.meta["exit_gflops_nominal"])
    budgets = [float(g[0] + f * (g[-1] - g[0])) for f in BUDGET_FRACTIONS]

    rows = []
    for b in budgets:
        for split, segments, passes in (("calibration", calib_segments, 1), ("held-out", heldout_segments,
                                                                             args.passes)):
            for tracking in (False, True):
                budget = ExitBudget(g, calibration, BudgetSettings(flops_budget=b, criterion=args.criterion,
                                                                   budget_tracking=tracking))
                r = run(policy, segments, budget, passes)
                realised, last = float(r["gflops"].mean()), float(r["gflops"][-200:].mean())
                windows = np.convolve(r["gflops"], np.ones(200) / 200, "valid")  # every 200-step running mean
                # what running every step to the last exit would have cost at the same prompts
                deepest = r["gflops"] * nominal[-1] / nominal[r["exits"] - 1]
                reachable = float(np.mean(deepest))
                rows.append({"budget": b, "split": split, "tracking": tracking, "steps": len(r["gflops"]),
                             "realised": realised, "reachable_max": reachable,
                             "steps_above_deepest": float(np.mean(deepest < b)), "error_pct": 100 * (realised / b - 1),
                             "error_last200_pct": 100 * (last / b - 1),
                             "worst_window200_pct": float(100 * np.max(np.abs(windows / b - 1))),
                             "exit_shares": (np.bincount(r["exits"] - 1, minlength=len(g)) / len(r["exits"])).tolist(),
                             "final_target": budget.tracker.target if budget.tracker else b})
    timings = solver_timings()
    out_dir = Path(args.out)
    png = out_dir / "budget_exits.png"
    plot(rows, len(g), png)
    search = None
    if args.search_calls > 0:
        search = online_search(policy, calibration, calib_segments, heldout_segments, budgets[len(budgets) // 2],
                               args.criterion, args.search_calls, args.search_frames, out_dir / "search_log.json")
    results = {"model": what, "criterion": args.criterion, "calibration_frames": calibration.n_samples,
               "calibration_seconds": calibrate_s, "exit_gflops": g.tolist(), "rows": rows,
               "solver_100k": timings, "online_search": search, "png": str(png)}
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"model: {what}\ncriterion: {args.criterion}; calibration: {calibration.n_samples} frames of "
          f"{args.calibration_split} in {calibrate_s:.1f} s; held-out: {args.heldout_split} x{args.passes}")
    print(f"exit GFLOPs: {' '.join(f'{x:.4g}' for x in g)}\n")
    print(table(rows))
    print("\nsolver on 100,000 samples x 6 exits (DeeR-3B): "
          + ", ".join(f"{k} {v:.2f}" for k, v in timings.items()))
    if search:
        print(f"\nonline threshold search at {search['budget']:.4g} GFLOPs ({search['calls']} calls, "
              f"{search['seconds']:.0f} s), pose RMSE (scaled units) / GFLOPs:")
        print("| thresholds | searched split | held-out split |\n|---|---|---|")
        for name in ("solved", "searched"):
            r = search[name]
            print(f"| {name} | {r['search_pose_rmse']:.4f} / {r['search_gflops']:.4g} | "
                  f"{r['heldout_pose_rmse']:.4f} / {r['heldout_gflops']:.4g} |")
    print(f"\nwrote {png} and {out_dir / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
