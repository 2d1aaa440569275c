"""`deer-ros`: the jobs that are not nodes.

  deer-ros demo        the CALVIN bridge replaying the bundled sample into the policy node, then a summary
  deer-ros calibrate   per-exit criterion values of a model on a CALVIN split -> calibration file
  deer-ros train       multi-exit training on CALVIN-format data
  deer-ros bench       benchmarks -> markdown report, PNG plots, JSON
  deer-ros flops       per-exit LLM FLOPs of a model preset
  deer-ros convert     released weights -> one deer_ros checkpoint
  deer-ros bag         rosbag2 bags: record, CALVIN <-> bag, repair, Rerun log
  deer-ros compare     two or more budgets on the same bag / split over ROS -> table and plot

Each sub-command lives in its own module and is imported only when it runs (torch is slow to import).
Options that mean the same thing have the same name in every sub-command and match the node parameters:
`--model` (preset), `--checkpoint`, `--calibration`, `--dataset`, `--split`, `--device`, `--dtype`,
`--cpu-threads`; the older `--preset` and `--threads` still work, with a warning.
"""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "demo": ("deer_ros.demo", "demo_main", "replay the bundled CALVIN sample through the policy node"),
    "calibrate": ("deer_ros.exits.cli", "calibrate_main", "write a calibration file for the threshold solver"),
    "train": ("deer_ros.train.cli", "train_main", "train a multi-exit model on CALVIN-format data"),
    "bench": ("deer_ros.bench.cli", "bench_main", "run the benchmarks and write a report"),
    "flops": ("deer_ros.model.flops", "flops_main", "print per-exit LLM FLOPs of a model preset"),
    "convert": ("deer_ros.convert", "convert_main",
                "join released DeeR / OpenFlamingo / MPT / CLIP weights into one checkpoint for the node"),
    "bag": ("deer_ros.bag.cli", "bag_main", "record, convert, repair rosbag2 bags; log a run to Rerun"),
    "compare": ("deer_ros.compare", "compare_main",
                "replay one bag or split under several budgets; table and plot of the action difference"),
}


def usage() -> str:
    lines = ["usage: deer-ros COMMAND [--help] [options]", "", "commands:"]
    lines += [f"  {name:<10} {text}" for name, (_, _, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"deer-ros: unknown command '{name}'\n\n{usage()}", file=sys.stderr)
        return 2
    module_name, func_name, _ = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("deer_ros"):
            print(f"deer-ros {name}: not available in this version ({exc.name} is missing)", file=sys.stderr)
            return 2
        raise
    return int(getattr(module, func_name)(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
