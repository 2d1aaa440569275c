"""`deer-ros bag`: record, convert, repair and visualise rosbag2 bags (docs/bags.md)."""
from __future__ import annotations

import argparse
import sys

from deer_ros.bag import types as T
from deer_ros.calvin.dataset import CalvinDatasetError
from deer_ros.dependencies import MissingDependency


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="deer-ros bag", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="record the deer_ros topics to a new bag until Ctrl-C")
    rec.add_argument("bag", help="new bag folder")
    rec.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    rec.add_argument("--duration", type=float, default=None, help="stop after this many seconds (node clock)")
    rec.add_argument("--topics", default="", help="comma-separated subset of: "
                     + ",".join(t.name for t in T.DEFAULT_TOPICS))
    fc = sub.add_parser("from-calvin", help="CALVIN split -> bag")
    fc.add_argument("split")
    fc.add_argument("bag")
    fc.add_argument("--segments", default=None, help="indices and/or task ids, e.g. 0,2,open_drawer")
    fc.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    tc = sub.add_parser("to-calvin", help="bag -> CALVIN split")
    tc.add_argument("bag")
    tc.add_argument("split", help="new or empty folder")
    tc.add_argument("--action-topic", default=T.EXPERT_TOPIC)
    tc.add_argument("--start-index", type=int, default=0, help="global index of the first frame")
    rp = sub.add_parser("repair", help="recover the bag a killed recorder left (writes BAG-repaired)")
    rp.add_argument("bag")
    rp.add_argument("--out", default=None)
    rr = sub.add_parser("rerun", help="bag -> Rerun .rrd file")
    rr.add_argument("bag")
    rr.add_argument("rrd")
    rr.add_argument("--action-topic", default=T.POLICY_TOPIC)
    return p


def bag_main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "record":
            from deer_ros.bag.recorder import record

            names = [t.strip() for t in args.topics.split(",") if t.strip()]
            unknown = set(names) - {t.name for t in T.DEFAULT_TOPICS}
            if unknown:
                raise ValueError(f"unknown topic(s) {sorted(unknown)}; known: {[t.name for t in T.DEFAULT_TOPICS]}")
            topics = [t for t in T.DEFAULT_TOPICS if not names or t.name in names]
            counts = record(args.bag, topics, args.storage, args.duration)
            print(f"{args.bag}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        elif args.command == "from-calvin":
            from deer_ros.bag.convert import split_to_bag

            print(split_to_bag(args.split, args.bag, args.segments, args.storage))
        elif args.command == "to-calvin":
            from deer_ros.bag.convert import bag_to_split

            print(bag_to_split(args.bag, args.split, args.start_index, args.action_topic))
        elif args.command == "repair":
            from deer_ros.bag.repair import repair_bag

            out, count = repair_bag(args.bag, args.out)
            print(f"{out}: {count} messages recovered")
        elif args.command == "rerun":
            from deer_ros.bag.rerun_log import log_bag

            counts = log_bag(args.bag, args.rrd, args.action_topic)
            print(f"{args.rrd}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    except (CalvinDatasetError, MissingDependency, ValueError, FileExistsError) as exc:
        print(f"deer-ros bag {args.command}: {exc}", file=sys.stderr)
        return 2
    return 0
