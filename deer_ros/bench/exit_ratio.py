"""The reference's exit_ratio settings under both calibration modes: mean LLM layers the policy then runs.

  python -m deer_ros.bench.exit_ratio [--checkpoint FOLDER] [--dataset ROOT] [--calibrate-split validation]
      [--eval-split validation] [--ratios 0.8,1.0,1.5]

For each mode (segments = ours, reference = the reference's protocol) the model is calibrated on one split,
thresholds are solved for each exit_ratio with the mode's counting rule, and the policy is replayed over every
whole segment of the evaluation split as the node runs it (state reset at each segment). "target" is the mean
layers the geometric shares ask for; "realised" what the replay spent.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def run(checkpoint: str, dataset: str, calibrate_split: str, eval_split: str, ratios: list[float],
        seed: int = 0) -> list[dict]:
    from deer_ros.calvin.dataset import CalvinSplit
    from deer_ros.calvin.replay import load_segments, open_loop
    from deer_ros.exits.calibration import collect_calibration, split_segments
    from deer_ros.exits.calibration_reference import ReferenceProtocol, collect_reference_calibration
    from deer_ros.exits.controller import ExitController
    from deer_ros.exits.solver import exit_shares, solve_exit_ratio
    from deer_ros.model.factory import load_policy
    from deer_ros.paths import split_folder

    policy = load_policy(checkpoint or None, preset=None)
    cal_split = CalvinSplit(split_folder(dataset, calibrate_split))
    segments = load_segments(CalvinSplit(split_folder(dataset, eval_split)))
    calibrations = {
        "segments": collect_calibration(policy, split_segments(cal_split), ["action_consistency"]),
        "reference": collect_reference_calibration(policy, cal_split, ReferenceProtocol(seed=seed),
                                                   ["action_consistency"]),
    }
    layers = np.array([e.layers for e in policy.exits])
    rows = []
    for mode, cal in calibrations.items():
        for r in ratios:
            sol = solve_exit_ratio(cal.criterion_values("action_consistency"), r, rule=cal.solver_rule)
            decide = ExitController("action_consistency", sol.thresholds)
            metrics = open_loop(policy, segments, decide).to_json()["overall"]
            rows.append({"mode": mode, "exit_ratio": r, "calibration_samples": cal.n_samples,
                         "target_layers": float(exit_shares(r, len(layers)) @ layers),
                         "realised_layers": metrics["mean_layers"], "realised_gflops": metrics["mean_gflops"]})
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| mode | calibration samples | exit_ratio | target mean layers | realised mean layers |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['mode']} | {r['calibration_samples']} | {r['exit_ratio']:g} | {r['target_layers']:.2f} | "
              f"{r['realised_layers']:.2f} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deer_ros.bench.exit_ratio", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default="", help="model folder ('' = the bundled demo model)")
    p.add_argument("--dataset", default="", help="CALVIN dataset root ('' = the bundled sample)")
    p.add_argument("--calibrate-split", default="validation", choices=("training", "validation"))
    p.add_argument("--eval-split", default="validation", choices=("training", "validation"))
    p.add_argument("--ratios", default="0.8,1.0,1.5")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    rows = run(args.checkpoint, args.dataset, args.calibrate_split, args.eval_split,
               [float(x) for x in args.ratios.split(",")], args.seed)
    print(json.dumps(rows, indent=2) if args.json else table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
