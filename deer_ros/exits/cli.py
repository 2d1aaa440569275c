"""`deer-ros calibrate`: run a model over a CALVIN-format split (or a rosbag2 bag) and write a calibration file.

The file holds every exit's criterion values (all registered criteria unless --criterion is given), the
per-exit GFLOPs, and which model, checkpoint (with its fingerprint) and data produced them. The checkpoint is
only read, never written. --mode segments (ours, default) steps whole segments as the node does; --mode
reference follows the reference's protocol (12-frame windows, validation split by default, augmentation) and,
for a DeeR .pth that holds the values a reference eval cached, reuses them (--recompute to collect anew).
--bag takes the frames from a rosbag2 bag instead (deer_ros.bag.reader.BagSplit: each instruction starts a
segment); both modes then run on it exactly as on a split.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from deer_ros.exits.criteria import CRITERIA, DEFAULT_CRITERION


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="deer-ros calibrate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="tiny", help="model preset (tiny, of3b, of9b)")
    p.add_argument("--checkpoint", default="", help="model folder (or checkpoint file); '' = the bundled demo model")
    p.add_argument("--mode", default="segments", choices=("segments", "reference"),
                   help="segments: whole segments as the node runs them; reference: the reference's protocol")
    p.add_argument("--dataset", default="", help="CALVIN dataset root (with training/, validation/) or a split "
                   "folder; '' = the bundled sample")
    p.add_argument("--bag", default="", help="rosbag2 bag (folder or .mcap/.db3 file) to calibrate on instead of "
                   "--dataset: demonstrations recorded on the robot (`deer-ros bag record`)")
    p.add_argument("--bag-topics", default="", help="--bag: ROLE=TOPIC overrides of the topics read, ROLE one of "
                   "static, gripper, instruction, action (defaults: camera/static/image_raw, "
                   "camera/gripper/image_raw, instruction, and no action topic: calibration needs none; "
                   "action=expert_action keeps only frames with an action there)")
    p.add_argument("--split", default=None, choices=("training", "validation"),
                   help="split of a dataset root (default: training for segments, validation for reference, as "
                        "the reference); refused when --dataset is the other split's folder")
    p.add_argument("--segments", default="", help="segments to use: indices and/or task ids, comma-separated "
                   "('' = all)")
    p.add_argument("--max-frames", type=int, default=None, help="at most this many frames per segment (segments)")
    p.add_argument("--window", type=int, default=12, help="reference: window length (frames)")
    p.add_argument("--data-percent", type=float, default=0.1, help="reference: share of the windows used")
    p.add_argument("--seed", type=int, default=0, help="reference: seed of the window choice, shifts and exits")
    p.add_argument("--no-augment", action="store_true", help="reference: no random-shift augmentation")
    p.add_argument("--recompute", action="store_true", help="reference: ignore values cached in a DeeR .pth")
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
    if args.bag and (args.dataset or args.split):
        print("deer-ros calibrate: --bag replaces --dataset and --split; give one source", file=sys.stderr)
        return 2
    from deer_ros.bag.reader import BagSplit, is_bag, open_split
    from deer_ros.calvin.dataset import CalvinDatasetError
    from deer_ros.exits.calibration import CalibrationError, calibration_meta, collect_calibration, split_segments
    from deer_ros.model.checkpoint import CheckpointError
    from deer_ros.model.factory import load_policy, resolve_checkpoint  # torch is imported only now

    split_name = args.split or ("validation" if args.mode == "reference" else "training")
    try:
        checkpoint = resolve_checkpoint(args.checkpoint or None, args.model)
        meta = calibration_meta(args.model, checkpoint, select=args.segments, device=args.device, dtype=args.dtype)
        cached = _cached(checkpoint, args) if args.mode == "reference" and not args.recompute else None
        if cached is not None:
            calibration = cached
            calibration.meta.update(meta)
        else:
            if args.bag and not is_bag(args.bag):
                raise CalvinDatasetError(f"--bag {args.bag}: not a rosbag2 bag (a folder with metadata.yaml, or an "
                                         ".mcap / .db3 file); a CALVIN split goes to --dataset")
            split = open_split(args.bag or args.dataset, split_name, args.bag_topics, bag_action_topic="")
            if isinstance(split, BagSplit):
                meta["bag_topics"] = split.topics
            meta.update(dataset=str(split.path.resolve()), split=split.path.name)
            policy = load_policy(checkpoint=checkpoint, preset=args.model, device=args.device, dtype=args.dtype)
            if args.mode == "reference":
                from deer_ros.exits.calibration_reference import ReferenceProtocol, collect_reference_calibration

                protocol = ReferenceProtocol(window=args.window, data_percent=args.data_percent, seed=args.seed,
                                             pads=(0, 0) if args.no_augment else (10, 4))
                calibration = collect_reference_calibration(policy, split, protocol, args.criterion,
                                                            args.segments, meta)
            else:
                meta["max_frames_per_segment"] = args.max_frames
                calibration = collect_calibration(policy, split_segments(split, args.segments, args.max_frames),
                                                  args.criterion, meta)
        calibration.save(out)
    except (CalvinDatasetError, CalibrationError, CheckpointError, OSError, ValueError, RuntimeError) as exc:
        print(f"deer-ros calibrate: {exc}", file=sys.stderr)
        return 1
    summary = _summary(calibration, out)
    print(json.dumps(summary, indent=2) if args.json else _format(summary))
    return 0


def _cached(checkpoint: Path, args):
    """The values a reference eval cached in a DeeR .pth, as a calibration; None when there are none."""
    if not checkpoint.is_file():
        return None
    from deer_ros.exits.calibration_reference import cached_calibration
    from deer_ros.model.checkpoint import config_from_reference, read_file
    from deer_ros.model.config import DeerConfig

    data = read_file(checkpoint)
    if data.get("format") == "deer_ros" or data.get("values") is None:
        return None
    config = config_from_reference(data, DeerConfig.preset(args.model), str(checkpoint))
    print(f"deer-ros calibrate: reusing the values cached in {checkpoint} (--recompute to collect anew)")
    return cached_calibration(data["values"].double().numpy(), config, str(checkpoint))


def _summary(calibration, out: Path) -> dict:
    main = DEFAULT_CRITERION if DEFAULT_CRITERION in calibration.values else calibration.criteria[0]
    v = calibration.values[main]
    return {"out": str(out), "mode": calibration.meta.get("mode", "segments"), "frames": calibration.n_samples,
            "segments": calibration.meta.get("segments", 0),
            "criteria": list(calibration.criteria), "exit_layers": calibration.exit_layers.tolist(),
            "exit_gflops": calibration.exit_gflops.tolist(), "criterion_shown": main,
            "median_value_per_exit": np.median(v, axis=1).tolist(),
            "p90_value_per_exit": np.percentile(v, 90, axis=1).tolist()}


def _format(s: dict) -> str:
    lines = [f"wrote {s['out']} ({s['mode']} mode): {s['frames']} samples from {s['segments']} segments, criteria "
             f"{', '.join(s['criteria'])}",
             f"{'exit':>4} {'layers':>6} {'GFLOPs':>10} {'median ' + s['criterion_shown']:>30} {'p90':>10}"]
    for i, (layers, g, med, p90) in enumerate(zip(s["exit_layers"], s["exit_gflops"], s["median_value_per_exit"],
                                                  s["p90_value_per_exit"])):
        lines.append(f"{i + 1:>4} {layers:>6} {g:>10.4g} {med:>30.4g} {p90:>10.4g}")
    return "\n".join(lines)
