"""A rosbag2 bag read as a CALVIN-like split: `BagSplit` yields the same `Frame` and `Segment` objects as
`CalvinSplit` (it is one, with frames from the bag), so anything that takes a split (calibration, the bridge's
replay, conversion) can take a bag.

How a bag becomes frames: each static camera image is a frame; the gripper image is the one with the nearest
header stamp (within `pair_tolerance_s`); the action is the message on `action_topic` whose header stamp is the
frame's (the EndEffectorAction convention: an action carries the stamp of the observation it answers); the
instruction is the last one logged before the image. Each instruction message starts a segment, and each segment
is an episode (as the bridge plays them); frames before the first instruction form an unannotated episode.
Frames are numbered from `start_index` in stamp order. The bag is read into memory once on open.
"""
from __future__ import annotations

import bisect
import json
import logging
import os
from pathlib import Path
from typing import Iterable

import numpy as np

from deer_ros.bag import types as T
from deer_ros.calvin.dataset import CalvinDatasetError, CalvinSplit, Frame, Segment
from deer_ros.paths import split_folder
from deer_ros.stamps import stamp_ns

log = logging.getLogger(__name__)
TASKS_KEY = "deer_ros.tasks"  # custom_data entry: JSON {instruction: CALVIN task id}, written by split_to_bag
TOPIC_ROLES = ("static", "gripper", "instruction", "action")  # `role=topic` keys of parse_topics
STORAGE_SUFFIXES = (".mcap", ".db3")
NO_ACTION = np.full(7, np.nan, dtype=np.float32)  # rel_actions of a frame read without an action topic
NO_ACTION_MESSAGE = object()  # stands for "no action topic" in the pairing


class BagError(CalvinDatasetError):
    """A bag that cannot be read as frames; the message names the bag and what to do."""


def header_ns(path: Path, topic: str, msg) -> int:
    """A message's header stamp in ns; a stamp that is not a valid time is a damaged bag."""
    ns = stamp_ns(msg.header.stamp)
    if ns is None:
        raise BagError(f"{path}: a message on '{topic}' has an invalid header stamp "
                       f"({msg.header.stamp.sec} s, {msg.header.stamp.nanosec} ns); re-record it with a valid clock.")
    return ns


def open_reader(path: Path):
    """An open rosbags Reader of `path`, with errors that say how to recover."""
    T.rosbags()
    from rosbags.rosbag2 import Reader
    from rosbags.rosbag2.errors import ReaderError

    if not path.exists():
        raise BagError(f"{path}: bag not found; give a rosbag2 bag folder (with metadata.yaml) or an .mcap file.")
    if path.is_dir() and not (path / "metadata.yaml").exists():
        raise BagError(f"{path}: no metadata.yaml. A recorder that was killed leaves its bag like this: recover it "
                       f"with `deer-ros bag repair {path}` (writes {path.name}-repaired; nothing is changed).")
    try:
        reader = Reader(path)
        reader.open()
    except (ReaderError, OSError, AssertionError) as exc:  # rosbags asserts on some malformed footers
        raise BagError(f"{path}: not a readable bag ({exc}). If the file was cut short (a killed recorder, a "
                       f"partial copy), recover what it holds with `deer-ros bag repair {path}`.") from exc
    return reader


def parse_topics(text: str) -> dict[str, str]:
    """BagSplit topic overrides from `role=topic` pairs ('static=/front/image,action='): a {role_topic: topic}
    dict for BagSplit's keyword arguments. `action=` (empty) reads no action topic."""
    out: dict[str, str] = {}
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        role, sep, topic = (part.strip() for part in item.partition("="))
        if not sep or role not in TOPIC_ROLES:
            raise BagError(f"bag topics {text!r}: {item!r} is not ROLE=TOPIC with ROLE one of {', '.join(TOPIC_ROLES)} "
                           "(e.g. 'static=/front/image_raw,action=teleop_action'; 'action=' reads no actions)")
        if not topic and role != "action":
            raise BagError(f"bag topics {text!r}: the {role} topic cannot be empty (only action= may be)")
        out[f"{role}_topic"] = topic
    return out


def is_bag(path: str | os.PathLike) -> bool:
    """Whether `path` is (or looks like) a rosbag2 bag: a folder with metadata.yaml or a storage file, or an
    .mcap / .db3 file. A killed recorder's folder (a storage file, no metadata) counts, so it gets the repair hint."""
    path = Path(path).expanduser()
    if path.is_file():
        return path.suffix in STORAGE_SUFFIXES
    return path.is_dir() and ((path / "metadata.yaml").exists()
                              or any(f.suffix in STORAGE_SUFFIXES for f in path.iterdir()))


def open_split(dataset: str | os.PathLike, split: str, bag_topics: str = "",
               bag_action_topic: str = T.EXPERT_TOPIC) -> CalvinSplit:
    """The frames to play or calibrate on: a BagSplit when `dataset` is a bag (topics: the defaults, then
    `bag_action_topic`, then the `bag_topics` overrides), else the CALVIN split `split` of `dataset`."""
    if str(dataset) and is_bag(dataset):
        return BagSplit(dataset, **{"action_topic": bag_action_topic, **parse_topics(bag_topics)})
    if bag_topics.strip():
        raise BagError(f"bag topics {bag_topics!r} given, but {dataset or 'the bundled sample'} is a CALVIN split, "
                       "not a bag; give a bag (a folder with metadata.yaml, or an .mcap / .db3 file)")
    return CalvinSplit(split_folder(dataset, split))


class BagSplit(CalvinSplit):
    """The frames of a rosbag2 bag (MCAP or sqlite3) as a split. See the module docstring for the pairing."""

    def __init__(self, path: str | os.PathLike, action_topic: str = T.EXPERT_TOPIC,
                 static_topic: str = T.STATIC_TOPIC, gripper_topic: str = T.GRIPPER_TOPIC,
                 instruction_topic: str = T.INSTRUCTION_TOPIC, pair_tolerance_s: float = 1 / 60,
                 start_index: int = 0) -> None:
        self.path = Path(path).expanduser()
        self.topics = {"static": static_topic, "gripper": gripper_topic, "instruction": instruction_topic}
        if action_topic:
            self.topics["action"] = action_topic
        self.dropped: dict[str, int] = {}
        self._tolerance_ns = int(pair_tolerance_s * 1e9)
        self._frames: dict[int, Frame] = {}
        self._build(self._read(), start_index)

    # ------------------------------------------------------------------ reading
    def _read(self) -> dict:
        store = T.typestore()
        reader = open_reader(self.path)
        try:
            wanted = {topic: role for role, topic in self.topics.items()}
            expected = {"static": T.IMAGE, "gripper": T.IMAGE, "action": T.ACTION, "instruction": T.STRING}
            present = {c.topic: c.msgtype for c in reader.connections}
            missing = [t for t in wanted if t not in present]
            if missing:
                raise BagError(f"{self.path}: topic(s) {missing} not in the bag (it has "
                               f"{dict(sorted(present.items()))}); record them, or name the topics the bag uses.")
            for topic, role in wanted.items():
                if present[topic] != expected[role]:
                    raise BagError(f"{self.path}: topic '{topic}' has type {present[topic]}, expected "
                                   f"{expected[role]} for the {role} topic; record that type or name another topic.")
            got = {role: [] for role in expected}  # "action" stays empty without an action topic
            custom = reader.storage.metadata.custom or {}
            conns = [c for c in reader.connections if c.topic in wanted]
            for conn, log_ns, raw in reader.messages(connections=conns):
                try:
                    msg = store.deserialize_cdr(raw, conn.msgtype)
                except Exception as exc:  # noqa: BLE001 - any decoding failure is a damaged message
                    raise BagError(f"{self.path}: a message on '{conn.topic}' at log time {log_ns} ns cannot be "
                                   f"decoded as {conn.msgtype} ({exc}); the bag is damaged or its type differs "
                                   "from deer_ros's.") from exc
                got[wanted[conn.topic]].append((log_ns, msg))
        finally:
            reader.close()
        got["tasks"] = json.loads(custom.get(TASKS_KEY, "{}"))
        return got

    def _build(self, got: dict, start_index: int) -> None:
        from deer_ros.images import ImageError, image_to_rgb

        statics = got["static"]
        if not statics:
            raise BagError(f"{self.path}: no message on '{self.topics['static']}'; nothing to read.")
        stamps = [header_ns(self.path, self.topics['static'], m) for _, m in statics]
        for i, (prev, cur) in enumerate(zip(stamps, stamps[1:])):
            if cur <= prev:
                raise BagError(f"{self.path}: '{self.topics['static']}' header stamps go backwards at message "
                               f"{i + 1} ({prev} ns then {cur} ns); frames must come in stamp order. Re-record with "
                               "one clock (use_sim_time consistently), or split the bag where the clock jumped.")
        grippers = sorted((header_ns(self.path, self.topics["gripper"], m), m) for _, m in got["gripper"])
        gripper_stamps = [s for s, _ in grippers]
        actions = {header_ns(self.path, self.topics.get("action", "action"), m): m for _, m in got["action"]}
        instructions = got["instruction"]
        instruction_times = [t for t, _ in instructions]
        tasks = got["tasks"]
        runs: list[tuple[int, list[int]]] = []  # (instruction message number or -1, frame indices)
        index = start_index
        dropped = {"no gripper image": 0, "no action": 0}
        for (log_ns, msg), stamp in zip(statics, stamps):
            gripper = self._nearest(grippers, gripper_stamps, stamp)
            action = actions.get(stamp) if "action" in self.topics else NO_ACTION_MESSAGE
            if gripper is None or action is None:
                dropped["no gripper image" if gripper is None else "no action"] += 1
                continue
            try:
                rgb_static, rgb_gripper = image_to_rgb(msg), image_to_rgb(gripper)
            except ImageError as exc:
                raise BagError(f"{self.path}: image stamped {stamp} ns cannot be read: {exc}.") from exc
            rel = (NO_ACTION.copy() if action is NO_ACTION_MESSAGE else
                   np.array([*action.translation, *action.rotation, action.gripper], dtype=np.float32))
            self._frames[index] = Frame(index, np.array(rgb_static), np.array(rgb_gripper), rel)
            which = bisect.bisect_right(instruction_times, log_ns) - 1
            if not runs or runs[-1][0] != which:
                runs.append((which, []))
            runs[-1][1].append(index)
            index += 1
        self.dropped = {k: v for k, v in dropped.items() if v}
        if self.dropped:
            log.warning("%s: frames without a partner left out: %s", self.path, self.dropped)
        if not self._frames:
            partner = f"and action on '{self.topics['action']}' " if "action" in self.topics else ""
            raise BagError(f"{self.path}: no static image has a matching gripper image {partner}"
                           f"({self.dropped}); check the topics and the stamps.")
        self.episodes = [(ids[0], ids[-1]) for _, ids in runs]
        self._segments = []
        for i, (which, ids) in enumerate(runs):
            text = instructions[which][1].data if which >= 0 else ""
            self._segments.append(Segment(i, ids[0], ids[-1], text, tasks.get(text, "")))
        self.annotated = any(s.instruction for s in self._segments)
        self._frame_ids = set(self._frames)

    def _nearest(self, items: list, keys: list[int], stamp: int):
        i = bisect.bisect_left(keys, stamp)
        best = min((j for j in (i - 1, i) if 0 <= j < len(keys)), key=lambda j: abs(keys[j] - stamp), default=None)
        if best is None or abs(keys[best] - stamp) > self._tolerance_ns:
            return None
        return items[best][1]

    # ------------------------------------------------------------------ access (the rest is CalvinSplit's)
    def frame(self, index: int, keys: Iterable[str] | None = None) -> Frame:
        try:
            return self._frames[index]
        except KeyError:
            raise BagError(f"frame {index} is not in {self.path} (frames {min(self._frames)}.."
                           f"{max(self._frames)}).") from None

    def __repr__(self) -> str:
        return super().__repr__().replace("CalvinSplit", "BagSplit", 1)
