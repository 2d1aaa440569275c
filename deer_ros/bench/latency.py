"""`deer-ros bench latency`: does latency_budget_ms hold the realised step time on its target, and how fast does it
recover when another process starts loading the CPU?

    deer-ros bench latency                         tiny (bundled demo model) and of3b (random weights), CPU fp32
    deer-ros bench latency --model tiny --quick    a smoke run (well under a minute)
    deer-ros bench latency --device cuda --dtype bf16    on a GPU

The policy runs in-process with the node's own budget machinery: one `ExitBudget` (cost model + solver + latency
tracker) per model, `record(step, latency_ms)` after every step, the recurrent state reset at every recorded
segment (the bundled CALVIN validation split, played in a loop). Latency here is the time of `DeerPolicy.step`
(the node adds its image conversion and publication, about a millisecond: `deer-ros bench` measures it).

1. The cost model learns on `--learn` steps (exit_ratio 1: a mix of exits), then four budgets are spread over
   [exit 1's learned cost, the last exit's] (fractions 0.2, 0.4, 0.6, 0.8) and applied in turn, as
   `ros2 param set` would: per budget, `--warmup` steps, then `--steps` measured steps: realised mean vs
   target (goal: within 5%) and p95.
2. Load: at the top budget, after `--load-pre` steps a CPU-burning subprocess (busy `--load-duty` of every 10 ms)
   starts on the same core as the benchmark (both pinned to it), and `--load-post` steps follow. Reported: the
   running mean over the latest `--window` steps, its worst error under load, and the steps from the load's start
   until that running mean is back within 5% of the target for good.
of3b on this CPU takes seconds per step: its step counts are small (see the defaults) and its cost model is
given a shorter warm-up and window (window 8, warm-up 3, instead of the node's 32 and 10), said in the output.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from deer_ros.calvin.replay import replay

FRACTIONS = (0.2, 0.4, 0.6, 0.8)
GOAL = 0.05  # realised mean within 5% of the target


@dataclass(frozen=True)
class Plan:
    """Step counts of one model's run."""
    learn: int
    warmup: int
    steps: int
    load_pre: int
    load_post: int
    window: int  # running-mean window of the load test
    cost_window: int | None = None  # None: the node's defaults
    cost_warmup: int | None = None


PLANS = {"tiny": Plan(learn=40, warmup=40, steps=150, load_pre=60, load_post=200, window=20),
         "of3b": Plan(learn=4, warmup=2, steps=4, load_pre=3, load_post=10, window=3, cost_window=8, cost_warmup=3)}
QUICK = Plan(learn=12, warmup=8, steps=20, load_pre=10, load_post=30, window=10)

BURNER = """
import sys, time
busy, period = float(sys.argv[1]), 0.01
while True:
    t = time.perf_counter()
    while time.perf_counter() - t < busy * period:
        pass
    time.sleep((1 - busy) * period)
"""


def build(preset: str, device: str, dtype: str, seed: int, calib_frames: int) -> tuple[Any, Any, str]:
    """The policy, its calibration and a line saying what it is."""
    if preset == "tiny":
        from deer_ros.exits.calibration import calibration_for
        from deer_ros.model.factory import load_policy

        calibration, _ = calibration_for("", "")
        return load_policy(None, device=device, dtype=dtype), calibration, "tiny, bundled demo model"
    from deer_ros.bench.cli import Target, load_frames, random_policy
    from deer_ros.bench.timing import calibrate
    from deer_ros.paths import calvin_sample

    policy = random_policy(preset, Target(device, dtype), seed)
    calibration = calibrate(policy, load_frames(calvin_sample() / "training", calib_frames))
    return policy, calibration, f"{preset}, random weights (seed {seed}), calibrated on {calib_frames} frames"


def run_steps(budget: Any, stream: Iterator, n: int, at_step=None) -> dict[str, list]:
    """n steps of `stream` (a `replay` under `budget.decider`), each recorded with its latency as the node does;
    `at_step(k)` runs before step k."""
    out: dict[str, list] = {"ms": [], "exit": [], "target": []}
    for k in range(n):
        if at_step is not None:
            at_step(k)
        t0 = time.perf_counter()
        r = next(stream).result  # the frames are in memory: this is the policy's step
        ms = (time.perf_counter() - t0) * 1e3
        budget.record(r, ms)
        out["ms"].append(ms)
        out["exit"].append(int(r.exit_index))
        tracker = budget.latency_tracker
        out["target"].append(tracker.target if tracker is not None else float("nan"))
    return out


def running_mean(ms: list[float], window: int) -> np.ndarray:
    a = np.asarray(ms, dtype=np.float64)
    c = np.cumsum(np.insert(a, 0, 0.0))
    n = np.minimum(np.arange(1, len(a) + 1), window)
    return (c[1:] - c[np.arange(1, len(a) + 1) - n]) / n


def recovery(ms: list[float], start: int, target: float, window: int) -> dict[str, Any]:
    """Steps from `start` until the running mean is within GOAL of `target` and stays so; its worst error."""
    err = running_mean(ms, window) / target - 1.0
    after = np.abs(err[start:])
    outside = np.flatnonzero(after > GOAL)
    steps = 0 if outside.size == 0 else int(outside[-1]) + 1
    recovered = steps < len(after)
    return {"steps_to_recover": steps if recovered else None, "worst_error_pct": float(100 * after.max()),
            "error_end_pct": float(100 * err[-1])}


class Burner:
    """A CPU-burning subprocess on the given CPUs (a duty cycle of busy-waiting), for the load test."""

    def __init__(self, duty: float, cpus: set[int] | None) -> None:
        self.duty, self.cpus = duty, cpus
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", BURNER, str(self.duty)])
        if self.cpus and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(self.proc.pid, self.cpus)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def bench_model(preset: str, plan: Plan, args: argparse.Namespace, segments: list) -> dict[str, Any]:
    from deer_ros.exits.controller import ExitBudget
    from deer_ros.exits.costs import CostModel

    t0 = time.perf_counter()
    policy, calibration, what = build(preset, args.device, args.dtype, args.seed, args.calib_frames)
    if args.vision_reuse > 0:
        from deer_ros.model.vision_reuse import CameraReuse, VisionReuse

        policy.set_vision_reuse(VisionReuse((CameraReuse(args.vision_reuse, 3),)))
        what += f"; static camera's vision tokens reused while its change <= {args.vision_reuse:g} (max age 3)"
    budget = ExitBudget.create(policy.exits, calibration, {})
    if plan.cost_window:
        budget.costs = CostModel(budget.exit_gflops, window=plan.cost_window, warmup=plan.cost_warmup)
    stream = replay(policy, segments, budget.decider, passes=None)  # the decider is reconfigured in place
    learned = run_steps(budget, stream, max(plan.learn, budget.costs.warmup))
    costs = budget.cost_table()
    lo, hi = costs.exit_ms[0], costs.exit_ms[-1]
    rows, traces = [], []
    for f in FRACTIONS:
        target = lo + f * (hi - lo)
        budget.apply({"latency_budget_ms": target})
        warm = run_steps(budget, stream, plan.warmup)
        got = run_steps(budget, stream, plan.steps)
        mean = float(np.mean(got["ms"]))
        rows.append({"fraction": f, "target_ms": target, "binding": budget.binding, "steps": plan.steps,
                     "mean_ms": mean, "error_pct": 100 * (mean / target - 1),
                     "p95_ms": float(np.percentile(got["ms"], 95)),
                     "mean_exit": float(np.mean(got["exit"])), "within_goal": abs(mean / target - 1) <= GOAL})
        traces.append({"target_ms": target, "ms": warm["ms"] + got["ms"], "warmup": plan.warmup})
    target = lo + FRACTIONS[-1] * (hi - lo)
    budget.apply({"latency_budget_ms": target})
    pinned = hasattr(os, "sched_setaffinity")
    cpus = os.sched_getaffinity(0) if pinned else set()
    core = {min(cpus)} if cpus else None
    burner = Burner(args.load_duty, core)
    try:
        if core:
            os.sched_setaffinity(0, core)  # the benchmark and the burner share one core: the load surely hits
        loaded = run_steps(budget, stream, plan.load_pre + plan.load_post,
                           at_step=lambda k: burner.start() if k == plan.load_pre else None)
    finally:
        burner.stop()
        if core:
            os.sched_setaffinity(0, cpus)
    load = {"target_ms": target, "duty": args.load_duty, "pre": plan.load_pre, "post": plan.load_post,
            "window": plan.window, "ms": loaded["ms"], "exit": loaded["exit"],
            "exit1_ms_before": lo, "exit1_ms_loaded": budget.cost_table().exit_ms[0],
            "mean_exit_before": float(np.mean(loaded["exit"][: plan.load_pre])),
            "mean_exit_after": float(np.mean(loaded["exit"][-max(1, plan.load_post // 2):])),
            **recovery(loaded["ms"], plan.load_pre, target, plan.window)}
    return {"model": preset, "what": what, "device": args.device, "dtype": args.dtype, "plan": plan.__dict__,
            "cost_model": {"window": budget.costs.window, "warmup": budget.costs.warmup,
                           "follow_steps": budget.costs.follow_steps},
            "learned": {"steps": len(learned["ms"]), **costs.report()}, "first_exit_ms": lo, "last_exit_ms": hi,
            "rows": rows, "traces": traces, "load": load, "seconds": time.perf_counter() - t0}


def plot(results: list[dict], path: Path) -> None:
    from deer_ros.dependencies import pyplot

    plt = pyplot("the latency benchmark plot")
    fig, axes = plt.subplots(len(results), 2, figsize=(12, 3.6 * len(results)), squeeze=False)
    for (ax_b, ax_l), r in zip(axes, results):
        x0 = 0
        for t in r["traces"]:
            xs = np.arange(x0, x0 + len(t["ms"]))
            ax_b.plot(xs, t["ms"], lw=0.6, color="tab:blue")
            ax_b.plot(xs, running_mean(t["ms"], r["load"]["window"]), lw=1.2, color="tab:orange")
            ax_b.hlines(t["target_ms"], xs[0], xs[-1], colors="k", linestyles="--", lw=1)
            ax_b.axvspan(xs[0], xs[0] + t["warmup"] - 0.5, color="0.9")
            x0 += len(t["ms"])
        every = np.concatenate([t["ms"] for t in r["traces"]])
        ax_b.set_ylim(0, 1.3 * np.percentile(every, 99))  # a single stall of another process would flatten the rest
        ax_b.set_title(f"{r['model']} {r['device']}:{r['dtype']}: four budgets (grey: warm-up)")
        ax_b.set_xlabel("step")
        ax_b.set_ylabel("step ms")
        load = r["load"]
        xs = np.arange(len(load["ms"]))
        ax_l.plot(xs, load["ms"], lw=0.6, color="tab:blue", label="step")
        ax_l.plot(xs, running_mean(load["ms"], load["window"]), lw=1.2, color="tab:orange",
                  label=f"running mean ({load['window']} steps)")
        ax_l.axhline(load["target_ms"], color="k", ls="--", lw=1, label="target")
        ax_l.axhspan(load["target_ms"] * (1 - GOAL), load["target_ms"] * (1 + GOAL), color="tab:green", alpha=0.15)
        ax_l.axvline(load["pre"], color="tab:red", lw=1, label=f"CPU burner starts ({load['duty']:.0%} duty)")
        ax_l.set_title(f"{r['model']}: load test at {load['target_ms']:.4g} ms")
        ax_l.set_xlabel("step")
        ax_l.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def tables(results: list[dict], command: str) -> str:
    lines = [f"`{command}`", "",
             "| model | device | budget (of exit 1..last) | target ms | binds | steps | realised mean ms | error | "
             "p95 ms | mean exit | within 5% |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for row in r["rows"]:
            lines.append(f"| {r['model']} | {r['device']}:{r['dtype']} | {row['fraction']:.0%} | "
                         f"{row['target_ms']:.4g} | {row['binding']} | {row['steps']} | {row['mean_ms']:.4g} | "
                         f"{row['error_pct']:+.1f}% | {row['p95_ms']:.4g} | {row['mean_exit']:.2f} | "
                         f"{'yes' if row['within_goal'] else 'no'} |")
    lines += ["", "| model | target ms | CPU burner | steps before / after | running mean of | worst error under load "
              "| steps to recover (within 5%) | error at end | mean exit before -> after | exit 1 cost before -> "
              "under load (learned ms) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        load = r["load"]
        rec = load["steps_to_recover"]
        lines.append(f"| {r['model']} | {load['target_ms']:.4g} | {load['duty']:.0%} duty, same core | "
                     f"{load['pre']} / {load['post']} | {load['window']} steps | {load['worst_error_pct']:.1f}% | "
                     f"{rec if rec is not None else 'not within the run'} | {load['error_end_pct']:+.1f}% | "
                     f"{load['mean_exit_before']:.2f} -> {load['mean_exit_after']:.2f} | "
                     f"{load['exit1_ms_before']:.4g} -> {load['exit1_ms_loaded']:.4g} |")
    lines.append("")
    for r in results:
        cm = r["cost_model"]
        lines.append(f"- {r['what']}: exit 1..last learned cost {r['first_exit_ms']:.4g}..{r['last_exit_ms']:.4g} "
                     f"ms after {r['learned']['steps']} steps; cost model window {cm['window']}, warm-up "
                     f"{cm['warmup']} (follows a change within {cm['follow_steps']} steps); {r['seconds']:.0f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from deer_ros.paths import calvin_sample

    p = argparse.ArgumentParser(prog="deer-ros bench latency", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 2)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny,of3b", help="comma-separated presets (default tiny,of3b)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--dtype", default="fp32", choices=("fp32", "fp16", "bf16", "int8"))
    p.add_argument("--quick", action="store_true", help="tiny only, few steps: a smoke run")
    p.add_argument("--steps", type=int, default=None, help="measured steps per budget (default: per model)")
    p.add_argument("--load-duty", type=float, default=0.4, help="share of every 10 ms the CPU burner is busy")
    p.add_argument("--vision-reuse", type=float, default=0.0, metavar="THRESHOLD",
                   help="reuse the static camera's vision tokens under this change threshold (grey levels, max age "
                        "3; default 0 = off), as the node's vision_reuse parameters do")
    p.add_argument("--calib-frames", type=int, default=6, help="calibration frames for a random-weight model")
    p.add_argument("--cpu-threads", type=int, default=1, help="torch threads (default 1; 0 = torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bench_out/latency", help="folder for latency.png and latency.json")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    args = p.parse_args(argv)
    presets = ["tiny"] if args.quick else [m.strip() for m in args.model.split(",") if m.strip()]
    unknown = [m for m in presets if m not in PLANS]
    if unknown or not presets:
        p.error(f"--model: {unknown or presets} not benchmarked here; choose from {', '.join(PLANS)}")
    if not 0.0 < args.load_duty < 1.0:
        p.error(f"--load-duty must be between 0 and 1 (exclusive), got {args.load_duty}")
    if not 0.0 <= args.vision_reuse <= 255.0:
        p.error(f"--vision-reuse must be a threshold in [0, 255] grey levels, got {args.vision_reuse}")
    if args.steps is not None and args.steps < 1:
        p.error(f"--steps must be >= 1, got {args.steps}")

    import torch

    from deer_ros.calvin.dataset import CalvinSplit
    from deer_ros.calvin.replay import load_segments

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"deer-ros bench latency: --device {args.device} needs CUDA, which this machine lacks; use "
              "--device cpu", file=sys.stderr)
        return 1
    if args.cpu_threads:
        torch.set_num_threads(args.cpu_threads)
    segments = load_segments(CalvinSplit(calvin_sample() / "validation"))
    results = []
    for preset in presets:
        plan = QUICK if args.quick else PLANS[preset]
        if args.steps:
            plan = Plan(**{**plan.__dict__, "steps": args.steps})
        print(f"[bench latency] {preset} ...", file=sys.stderr, flush=True)
        results.append(bench_model(preset, plan, args, segments))
    out = Path(args.out)
    plot(results, out / "latency.png")
    command = " ".join(["deer-ros bench latency", *(argv if argv is not None else sys.argv[1:])])
    host = {"command": command, "torch_threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d %H:%M"),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    (out / "latency.json").write_text(json.dumps({"host": host, "results": results}, indent=2))
    if args.json:
        print(json.dumps({"host": host, "results": results}, indent=2))
    else:
        print(tables(results, command))
        print(f"\nwrote {out / 'latency.png'} and {out / 'latency.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
