"""`deer-ros calibrate`: run a model over a CALVIN-format split and write a calibration file.

The file holds every exit's criterion values (all registered criteria unless --criterion is given), the
per-exit GFLOPs, and which model, checkpoint (with its SHA-256) and data produced them. The checkpoint is only
read, never written.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from deer_ros.exits.criteria import CRITERIA, DEFAULT_CRITERION
from deer_ros.paths import split_folder


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="deer-ros calibrate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="tiny", help="model preset (tiny, of3b, of9b)")
    p.add_argument("--checkpoint", default="", help="checkpoint file; '' = the bundled tiny demo checkpoint")
    p.add_argument("--dataset", default="", help="CALVIN dataset root (with training/, validation/) or a split "
                   "folder; '' = the bundled sample")
    p.add_argument("--split", default="training", choices=("training", "validation"),
                   help="split of a dataset root; keep the other one to check the budget on unseen data")
    p.add_argument("--segments", default="", help="segments to use: indices and/or task ids, comma-separated "
                   "('' = all)")
    p.add_argument("--max-frames", type=int, default=None, help="at most this many frames per segment")
    p.add_argument("--criterion", action="append", choices=tuple(CRITERIA), default=None,
                   help="criterion to record (repeatable; default: all of them)")
    p.add_argument("--out", required=True, help="calibration file to write (.npz)")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N")
    p.add_argument("--dtype", default="fp32", choices=("fp32", "fp16", "bf16"))
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    return p


def calibrate_main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out).expanduser()
    if out.suffix != ".npz":
        print(f"deer-ros calibrate: --out {out}: calibration files are .npz", file=sys.stderr)
        return 2
    if args.max_frames is not None and args.max_frames < 1:
        print("deer-ros calibrate: --max-frames must be >= 1", file=sys.stderr)
        return 2
    from deer_ros.calvin.dataset import CalvinDatasetError, CalvinSplit
    from deer_ros.exits.calibration import CalibrationError, collect_calibration, file_sha256, split_segments
    from deer_ros.model.checkpoint import load_policy  # torch is imported only now
    from deer_ros.paths import demo_checkpoint

    try:
        split = CalvinSplit(split_folder(args.dataset, args.split))
        checkpoint = Path(args.checkpoint).expanduser() if args.checkpoint else demo_checkpoint()
        policy = load_policy(checkpoint=args.checkpoint or None, preset=args.model, device=args.device,
                             dtype=args.dtype)
        meta = {"model": args.model, "checkpoint": str(checkpoint.resolve()) if checkpoint.exists() else "",
                "checkpoint_sha256": file_sha256(checkpoint) if checkpoint.exists() else "",
                "dataset": str(split.path.resolve()), "split": split.path.name, "select": args.segments,
                "max_frames_per_segment": args.max_frames, "device": args.device, "dtype": args.dtype}
        calibration = collect_calibration(policy, split_segments(split, args.segments, args.max_frames),
                                          args.criterion, meta)
        calibration.save(out)
    except (CalvinDatasetError, CalibrationError, OSError, ValueError, RuntimeError) as exc:  # Runtime: checkpoints
        print(f"deer-ros calibrate: {exc}", file=sys.stderr)
        return 1
    summary = _summary(calibration, out)
    print(json.dumps(summary, indent=2) if args.json else _format(summary))
    return 0


def _summary(calibration, out: Path) -> dict:
    main = DEFAULT_CRITERION if DEFAULT_CRITERION in calibration.values else calibration.criteria[0]
    v = calibration.values[main]
    return {"out": str(out), "frames": calibration.n_samples, "segments": calibration.meta["segments"],
            "criteria": list(calibration.criteria), "exit_layers": calibration.exit_layers.tolist(),
            "exit_gflops": calibration.exit_gflops.tolist(), "criterion_shown": main,
            "median_value_per_exit": np.median(v, axis=1).tolist(),
            "p90_value_per_exit": np.percentile(v, 90, axis=1).tolist()}


def _format(s: dict) -> str:
    lines = [f"wrote {s['out']}: {s['frames']} frames from {s['segments']} segments, criteria "
             f"{', '.join(s['criteria'])}",
             f"{'exit':>4} {'layers':>6} {'GFLOPs':>10} {'median ' + s['criterion_shown']:>30} {'p90':>10}"]
    for i, (layers, g, med, p90) in enumerate(zip(s["exit_layers"], s["exit_gflops"], s["median_value_per_exit"],
                                                  s["p90_value_per_exit"])):
        lines.append(f"{i + 1:>4} {layers:>6} {g:>10.4g} {med:>30.4g} {p90:>10.4g}")
    return "\n".join(lines)
