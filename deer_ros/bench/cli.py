"""`deer-ros bench`: where the time of an action goes, realised savings, memory per exit, node and bridge costs.

Writes DIR/benchmarks.md (the report), DIR/*.png (plots) and DIR/bench.json (every number). With --json the
JSON is also printed. Models are randomly initialised (timing and memory do not depend on the weights; nothing
is downloaded); images and instructions are real CALVIN frames from the bundled sample.

    deer-ros bench                      tiny and of3b on the CPU in fp32, with the ROS benchmarks
    deer-ros bench --quick --skip-ros   tiny only, a few steps (well under a minute)
    deer-ros bench --targets cpu:fp32,cuda:fp16,cuda:bf16    also on a GPU
    deer-ros bench latency --help       latency_budget_ms: realised vs target, recovery under CPU load
    deer-ros bench reuse --help         vision-token reuse: action error and time saved on recorded data
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from deer_ros.cli_options import add_deprecated_alias

if TYPE_CHECKING:
    from deer_ros.bench.timing import BenchFrame

DEFAULT_STEPS = {"tiny": 40, "of3b": 5, "of9b": 3}
QUICK_STEPS = 4
DTYPES = ("fp32", "fp16", "bf16", "int8")


@dataclass(frozen=True)
class Target:
    """Where and in what precision a model is timed."""
    device: str
    dtype: str

    @property
    def label(self) -> str:
        return f"{self.device}:{self.dtype}"


@dataclass
class Options:
    """The parsed command line."""
    presets: list[str]
    targets: list[Target]
    out: Path
    steps: dict[str, int]
    warmup: dict[str, int]
    ros: bool
    quick: bool
    dataset: Path
    seed: int
    report: Path | None = None
    threads: int = 0
    command: str = ""
    timings_s: dict[str, float] = field(default_factory=dict)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="deer-ros bench", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny,of3b", help="comma-separated model presets (default tiny,of3b)")
    add_deprecated_alias(p, "--preset", "--model", dest="model")
    p.add_argument("--quick", action="store_true", help="tiny only, a few steps: a smoke run (< 1 min)")
    p.add_argument("--out", default="bench_out", help="output folder (default bench_out/)")
    p.add_argument("--report", default="", help="where to write the markdown report (default OUT/benchmarks.md)")
    p.add_argument("--json", action="store_true", help="also print the results as JSON")
    p.add_argument("--render", default="", metavar="BENCH_JSON",
                   help="measure nothing: re-write the report and plots from a bench.json of an earlier run")
    p.add_argument("--steps", type=int, default=None,
                   help="timed steps per measurement (default: "
                        + ", ".join(f"{k} {v}" for k, v in DEFAULT_STEPS.items()) + f"; --quick {QUICK_STEPS})")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps before each measurement (default 2, "
                   "1 with --quick or for real-size presets)")
    p.add_argument("--skip-ros", action="store_true", help="skip the node overhead / bridge benchmarks")
    p.add_argument("--targets", default="cpu:fp32",
                   help="comma-separated device:dtype pairs to time, e.g. cpu:fp32,cuda:fp16,cuda:bf16")
    p.add_argument("--dataset", default="", help="CALVIN dataset root for the frames (default: bundled sample)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    p.add_argument("--cpu-threads", type=int, default=0,
                   help="torch intra-op threads (default 0: torch's default, one per core). On a machine shared "
                        "with other busy processes 1 thread gives far steadier timings")
    add_deprecated_alias(p, "--threads", "--cpu-threads", dest="cpu_threads", type=int)
    return p


def parse_options(argv: list[str] | None) -> tuple[Options, bool, str]:
    parser = build_parser()
    args = parser.parse_args(argv)
    from deer_ros.model.config import PRESETS
    from deer_ros.paths import calvin_sample

    presets = ["tiny"] if args.quick else [p.strip() for p in args.model.split(",") if p.strip()]
    unknown = [p for p in presets if p not in PRESETS]
    if not presets or unknown:
        parser.error(f"--model: unknown preset(s) {unknown or presets}; choose from {', '.join(PRESETS)}")
    targets = []
    for item in args.targets.split(","):
        device, _, dtype = item.strip().partition(":")
        if device.split(":")[0] not in ("cpu", "cuda") or dtype not in DTYPES:
            parser.error(f"--targets: '{item}' is not device:dtype with device cpu or cuda and dtype one of "
                         f"{', '.join(DTYPES)} (e.g. cpu:fp32 or cuda:bf16)")
        if dtype == "int8" and device != "cpu":
            parser.error("--targets: int8 runs on the CPU only (dynamic quantisation); use cuda:fp16 or cuda:bf16")
        targets.append(Target(device, dtype))
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps must be at least 1 (got {args.steps})")
    if args.cpu_threads < 0:
        parser.error(f"--cpu-threads must be >= 0 (got {args.cpu_threads})")
    if args.warmup is not None and args.warmup < 0:
        parser.error(f"--warmup must be >= 0 (got {args.warmup})")
    steps = {p: args.steps or (QUICK_STEPS if args.quick else DEFAULT_STEPS.get(p, 5)) for p in presets}
    warmup = {p: args.warmup if args.warmup is not None else (1 if args.quick or p != "tiny" else 2)
              for p in presets}
    dataset = Path(args.dataset).expanduser() if args.dataset else calvin_sample()
    return Options(presets, targets, Path(args.out), steps, warmup, not args.skip_ros, args.quick, dataset,
                   args.seed, Path(args.report) if args.report else None, args.cpu_threads,
                   " ".join(["deer-ros bench", *(argv if argv is not None else sys.argv[1:])])), args.json, args.render


# ---------------------------------------------------------------------------------------------- inputs
def load_frames(split_dir: Path, n: int) -> list[BenchFrame]:
    """`n` frames spread evenly over all annotated segments of a CALVIN split, with their instructions."""
    from deer_ros.bench.timing import BenchFrame
    from deer_ros.calvin.dataset import CalvinSplit
    from deer_ros.calvin.replay import load_segments

    items = [(seg, i) for seg in load_segments(CalvinSplit(split_dir), in_memory=False) for i in range(len(seg.frames))]
    if not items:
        raise ValueError(f"{split_dir}: no frames to benchmark on")
    picks = sorted({int(round(i)) for i in [k * (len(items) - 1) / max(1, n - 1) for k in range(n)]})
    out = []
    for i in picks:
        seg, index = items[i]
        frame = seg.frames[index]
        out.append(BenchFrame(frame.static, frame.gripper, seg.instruction, seg.index))
    return out


def random_policy(preset: str, target: Target, seed: int):
    """A DeerPolicy of `preset` with random weights on the target device/dtype.

    Real-size presets name no bundled tokenizer (they need a local GPT-NeoX one); the bundled CALVIN-vocabulary
    tokenizer stands in, which gives prompts of a similar length (one token per word).
    """
    import torch

    from deer_ros.model.config import BUNDLED_TOKENIZER, DeerConfig
    from deer_ros.model.deer import build_model
    from deer_ros.model.policy import DeerPolicy
    from deer_ros.model.tokenizer import load_tokenizer

    torch.manual_seed(seed)
    config = DeerConfig.preset(preset)
    tokenizer = load_tokenizer(config.tokenizer or BUNDLED_TOKENIZER)
    return DeerPolicy(build_model(config), tokenizer, device=target.device, dtype=target.dtype)


# ---------------------------------------------------------------------------------------------- runs
def _log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


@contextmanager
def _timed(opts: Options, name: str) -> Iterator[None]:
    """Log a section's start and end and keep its wall time for the report."""
    _log(f"{name} ...")
    t0 = time.perf_counter()
    yield
    opts.timings_s[name] = round(time.perf_counter() - t0, 2)
    _log(f"{name}: {opts.timings_s[name]:.1f} s")


def bench_target(preset: str, target: Target, opts: Options, frames: list[BenchFrame],
                 calib_frames: list[BenchFrame]) -> dict:
    """Per-exit latency, stage breakdown, per-budget latency and the before/after gains of one preset/target."""
    import gc

    from deer_ros.bench import gains, timing

    steps, warmup = opts.steps[preset], opts.warmup[preset]
    tag = f"{preset} {target.label}"
    with _timed(opts, f"{tag}: build"):
        policy = random_policy(preset, target, opts.seed)
    with _timed(opts, f"{tag}: latency per exit"):
        exits = timing.time_exits(policy, frames, steps, warmup)
    with _timed(opts, f"{tag}: stage breakdown"):
        breakdown = timing.time_breakdown(policy, frames, steps, warmup)
    with _timed(opts, f"{tag}: latency per budget"):
        # every calibration frame is a step to the last exit: real-size presets calibrate on a third of them
        calibration = timing.calibrate(policy, calib_frames if preset == "tiny" else calib_frames[::3])
        budgets = timing.time_budgets(policy, calibration, frames, timing.budget_points(calibration.exit_gflops),
                                      steps, warmup)
    with _timed(opts, f"{tag}: gains"):
        rows = [gains.cameras_batched(policy, frames, steps, warmup),
                gains.prompt_reused(policy, frames, max(steps, 10) if preset == "tiny" else steps, warmup),
                gains.head_state_kept(policy, max(steps, 20), warmup),
                gains.early_exit(exits)]
    for row, in_step in zip(exits, breakdown["in_step_ratios"]):
        row["in_step_time_ratio"] = in_step["time_ratio_p50"]
        row["in_step_ratio_error"] = in_step["time_ratio_p50"] / row["flops_ratio"] - 1.0
    memory_mb = policy.memory_mb()
    del policy
    gc.collect()
    int8_exits = None
    if target == Target("cpu", "fp32"):
        with _timed(opts, f"{tag}: int8 LLM"):
            int8 = random_policy(preset, Target("cpu", "int8"), opts.seed)
            int8_exits = timing.time_exits(int8, frames, steps, warmup, only=[len(exits)])
            rows.append(gains.int8_llm(exits, int8_exits))
            del int8
            gc.collect()
    total_last = exits[-1]["total_ms_p50"]
    for row in rows:
        row["share_of_step"] = row["saving_ms"] / total_last  # of a whole step at the last exit
    return {"preset": preset, "device": target.device, "dtype": target.dtype, "steps": steps, "warmup": warmup,
            "exits": exits, "breakdown": breakdown, "budgets": budgets, "gains": rows, "int8_exits": int8_exits,
            "weights_mb": memory_mb, "prompt_tokens": _prompt_tokens(frames, preset)}


def _prompt_tokens(frames: list[BenchFrame], preset: str) -> dict:
    """Prompt lengths of the benchmark frames' instructions, as the policy tokenises them."""
    from deer_ros.model.config import BUNDLED_TOKENIZER, DeerConfig
    from deer_ros.model.tokenizer import PromptEncoder, load_tokenizer

    config = DeerConfig.preset(preset)
    enc = PromptEncoder(load_tokenizer(config.tokenizer or BUNDLED_TOKENIZER), config.max_text_tokens)
    lengths = [enc([f.instruction]).input_ids.shape[1] for f in frames]
    return {"min": min(lengths), "max": max(lengths), "mean": sum(lengths) / len(lengths),
            "typical_config": config.typical_prompt_tokens}


def bench_ros(opts: Options, frames: list[BenchFrame]) -> dict:
    """Node overhead, bridge free-running throughput and lockstep, with a random tiny checkpoint."""
    from deer_ros.bench import ros_bench
    from deer_ros.model.checkpoint import save_checkpoint

    logs = Path(tempfile.mkdtemp(prefix="deer_ros_bench_ros_"))  # node logs and the checkpoint stay out of --out
    checkpoint = save_checkpoint(random_policy("tiny", Target("cpu", "fp32"), opts.seed), logs / "tiny_random.pt")
    out: dict = {"model": "tiny (random weights), CPU fp32", "logs": str(logs)}
    with _timed(opts, "ros: node overhead"):
        out["node_overhead"] = ros_bench.node_overhead(checkpoint, frames, 40 if opts.quick else 300, 30.0, logs,
                                                       opts.threads)
    with _timed(opts, "ros: bridge free-running"):
        out["bridge_replay"] = ros_bench.bridge_throughput(200 if opts.quick else 1000, logs)
    with _timed(opts, "ros: bridge lockstep"):
        out["lockstep"] = ros_bench.lockstep(checkpoint, 40 if opts.quick else 300, logs, opts.threads)
    with _timed(opts, "ros: dataset read rate"):
        from deer_ros.bench.timing import read_throughput
        from deer_ros.calvin.dataset import CalvinSplit

        out["dataset_read"] = read_throughput(CalvinSplit(opts.dataset / "validation"))
    return out


def host_info(opts: Options) -> dict:
    import torch

    return {"command": opts.command, "python": platform.python_version(), "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(), "cores": _cores(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "quick": opts.quick, "seed": opts.seed,
            "load_average_start": _loadavg()}


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _loadavg() -> list[float] | None:
    import os

    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def run(opts: Options) -> dict:
    import torch

    threads = torch.get_num_threads()
    try:
        return _run(opts)
    finally:
        torch.set_num_threads(threads)  # bench_main may run inside a longer process (tests)


def _run(opts: Options) -> dict:
    import torch

    from deer_ros.bench import memory
    from deer_ros.model.config import DeerConfig
    from deer_ros.model.flops import cost_report

    if opts.threads:
        torch.set_num_threads(opts.threads)
    cuda = [t for t in opts.targets if t.device.startswith("cuda")]
    if cuda and not torch.cuda.is_available():
        raise RuntimeError(f"targets {', '.join(t.label for t in cuda)} need CUDA, which this machine lacks; "
                           "drop them from --targets")
    from deer_ros.bench.report import inputs_digest

    results: dict = {"host": host_info(opts), "inputs_digest": inputs_digest(), "runs": [], "memory": {},
                     "flops": {}}
    n_frames = 8 if opts.quick else 24
    frames = load_frames(opts.dataset / "validation", n_frames)
    calib_frames = load_frames(opts.dataset / "training", n_frames)
    for preset in opts.presets:
        config = DeerConfig.preset(preset)
        results["flops"][preset] = cost_report(config)
        for target in opts.targets:
            results["runs"].append(bench_target(preset, target, opts, frames, calib_frames))
        with _timed(opts, f"{preset}: memory per max_exit"):
            results["memory"][preset] = memory.llm_memory(config)
    if opts.ros:
        results["ros"] = bench_ros(opts, frames)
    results["host"]["load_average_end"] = _loadavg()
    results["run_times_s"] = opts.timings_s
    return results


SUBCOMMANDS = {"latency": "deer_ros.bench.latency", "reuse": "deer_ros.bench.vision_reuse"}


def bench_main(argv: list[str] | None = None) -> int:
    from deer_ros.bench.report import write_report

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:  # `deer-ros bench latency ...`: its own options
        import importlib

        return int(importlib.import_module(SUBCOMMANDS[argv[0]]).main(argv[1:]) or 0)
    opts, print_json, render = parse_options(argv)
    t0 = time.perf_counter()
    try:
        if render:
            results = json.loads(Path(render).read_text())
        else:
            results = run(opts)
            results["run_times_s"]["total"] = round(time.perf_counter() - t0, 1)
    except (RuntimeError, ValueError, FileNotFoundError, TimeoutError, json.JSONDecodeError) as exc:
        print(f"deer-ros bench: {exc}", file=sys.stderr)
        return 1
    paths = write_report(results, opts.out, opts.report)
    if print_json:
        print(json.dumps(results, indent=2))
    else:
        print(f"wrote {', '.join(str(p) for p in paths)}")
    return 0


if __name__ == "__main__":
    sys.exit(bench_main(None))
