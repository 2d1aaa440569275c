"""A run logged to Rerun, read back with the `rerun` CLI that ships in the rerun-sdk wheel."""
from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from deer_ros.bag import types as T
from deer_ros.bag.convert import frame_messages, frame_ns
from deer_ros.bag.writer import BagWriter
from deer_ros.calvin.dataset import Frame

pytest.importorskip("rosbags", reason="needs the bag extra: pip install 'deer_ros[bag]'")
pytest.importorskip("rerun", reason="needs the viz extra: pip install 'deer_ros[viz]'")
FRAMES = 6


def _criterion(i: int) -> list[float]:
    """Criterion values of frame i's action: one per exit examined (exit i % 3 + 1 chosen)."""
    return [0.5 + i + k / 8 for k in range(i % 3 + 1)]


def _policy_run(path):
    """A bag as the policy node leaves it: instruction, cameras and its actions on `action` (exits, a budget)."""
    with BagWriter(path) as writer:
        for spec in T.DEFAULT_TOPICS:
            writer.add_topic(spec)
        writer.write(T.INSTRUCTION_TOPIC, 0, writer.store.types[T.STRING](data="open the drawer"))
        for i in range(FRAMES):
            rgb = np.full((8, 8, 3), i, dtype=np.uint8)
            msgs = frame_messages(writer.store, Frame(i, rgb, rgb[:4, :4], np.zeros(7, np.float32)), frame_ns(i))
            action = msgs.pop(T.EXPERT_TOPIC)
            action.exit_index, action.layers, action.gflops, action.flops_budget = i % 3 + 1, 4, 1.5, 2.0
            action.criterion_values = np.array(_criterion(i), dtype=np.float32)
            for topic, msg in {**msgs, T.POLICY_TOPIC: action}.items():
                writer.write(topic, frame_ns(i) + 1, msg)
    return path


def _rerun(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rerun_cli", *args], capture_output=True, text=True, timeout=120)


def test_the_rrd_file_holds_cameras_instruction_actions_exits_criterion_values_and_budget(tmp_path):
    from deer_ros.bag.rerun_log import ENTITIES, log_bag

    rrd = tmp_path / "run.rrd"
    counts = log_bag(_policy_run(tmp_path / "bag"), rrd)
    assert rrd.stat().st_size > 0

    verify = _rerun("rrd", "verify", str(rrd))
    assert verify.returncode == 0, verify.stderr
    printed = _rerun("rrd", "print", str(rrd))
    assert printed.returncode == 0, printed.stderr
    # One line per chunk: "Chunk(...) with N rows (...) - /entity - data columns: [Archetype:field ...]"
    rows: Counter = Counter()
    columns = {}
    for n, entity, cols in re.findall(r"with (\d+) rows .*? - /(\S+) - data columns: \[(.*)\]", printed.stdout):
        if not entity.startswith("__"):  # rerun's own /__properties (recording info)
            rows[entity] += int(n)
            columns[entity] = cols
    assert dict(rows) == {e: FRAMES if e != "instruction" else 1 for e in ENTITIES} == counts
    assert columns["camera/static"].startswith("Image:") and columns["instruction"] == "TextDocument:text"
    assert columns["policy/exit"] == columns["policy/budget"] == "Scalars:scalars"
    assert columns["policy/criterion"] == "Scalars:scalars"
    # The data itself (-vvv prints the chunks' cells): every action's criterion values, one per exit examined.
    data = _rerun("rrd", "print", "-vvv", str(rrd))
    assert data.returncode == 0, data.stderr
    chunk = data.stdout[data.stdout.index("- /policy/criterion -"):]
    chunk = chunk[:chunk.index("Chunk(")] if "Chunk(" in chunk else chunk  # up to the next chunk
    cells = re.findall(r"\u2506 \[([-\d., e]+)\] +\u2502", chunk)  # the last column: "┆ [0.5, 0.625] │"
    assert [[float(v) for v in c.split(",")] for c in cells] == [_criterion(i) for i in range(FRAMES)]
