"""Recover a bag whose recorder was killed: there is no metadata.yaml, and an MCAP file has no summary or footer.

The MCAP data section is a run of records (1-byte opcode, uint64 length, body). The complete ones are copied to
a new file, a footer without summary is appended (MCAP allows a summary-less file; readers then scan the data),
and the messages are rewritten through rosbags into a complete MCAP bag. A sqlite3 file holds what was committed
(the recorder commits at each flush) and is read from a copy. The damaged bag is never modified.
"""
from __future__ import annotations

import os
import shutil
import struct
import tempfile
from pathlib import Path

from deer_ros.bag.types import rosbags, typestore

MAGIC = b"\x89MCAP0\r\n"
FOOTER_OP = 0x02
DATA_END_OP = 0x0F


class BagRepairError(ValueError):
    """A bag that cannot be recovered; the message says why."""


def complete_prefix(data: bytes) -> int:
    """Length of the longest prefix of an MCAP file that ends on a complete data record (before any footer)."""
    if not data.startswith(MAGIC):
        raise BagRepairError("not an MCAP file (its first bytes are not the MCAP magic)")
    pos = len(MAGIC)
    while pos + 9 <= len(data):
        op, length = data[pos], struct.unpack_from("<Q", data, pos + 1)[0]
        if op in (FOOTER_OP, DATA_END_OP) or pos + 9 + length > len(data):
            break
        pos += 9 + length
    return pos


def storage_file(bag: Path) -> Path:
    """The one .mcap or .db3 file of a bag folder (or `bag` itself when it is such a file)."""
    files = sorted([*bag.glob("*.mcap"), *bag.glob("*.db3")]) if bag.is_dir() else [bag]
    if len(files) != 1 or files[0].suffix not in (".mcap", ".db3") or not files[0].is_file():
        raise BagRepairError(f"{bag}: expected a bag folder with one .mcap or .db3 file (or such a file), found "
                             f"{[f.name for f in files]}")
    return files[0]


def readable_copy(source: Path, tmp: Path) -> Path:
    """A copy of `source` in `tmp` that rosbags can open: MCAP cut after its last complete record, with a footer."""
    copy = tmp / source.name
    if source.suffix == ".db3":
        shutil.copyfile(source, copy)
        return copy
    data = source.read_bytes()
    end = complete_prefix(data)
    if end <= len(MAGIC):
        raise BagRepairError(f"{source}: holds no complete MCAP record; nothing can be recovered")
    copy.write_bytes(data[:end] + struct.pack("<BQQQI", FOOTER_OP, 20, 0, 0, 0) + MAGIC)
    return copy


def repair_bag(bag: str | os.PathLike, out: str | os.PathLike | None = None) -> tuple[Path, int]:
    """Write the readable part of `bag` as a complete bag at `out` (default `<bag>-repaired`).
    Returns (out, number of messages recovered)."""
    rosbags()
    from rosbags.rosbag2 import Reader, Writer

    bag = Path(bag).expanduser()
    source = storage_file(bag)
    out = Path(out) if out is not None else bag.with_name(f"{bag.name}-repaired")
    if out.exists():
        raise BagRepairError(f"{out}: exists already; give another output folder")
    with tempfile.TemporaryDirectory() as tmp:
        fixed = readable_copy(source, Path(tmp))
        count = 0
        try:
            with Reader(fixed) as reader, _new_bag(Writer, out) as writer:
                conns = {}
                for c in reader.connections:
                    conns[c.id] = writer.add_connection(c.topic, c.msgtype, typestore=typestore(),
                                                        offered_qos_profiles=c.ext.offered_qos_profiles)
                for conn, stamp, raw in reader.messages():
                    writer.write(conns[conn.id], stamp, raw)
                    count += 1
        except Exception:
            shutil.rmtree(out, ignore_errors=True)  # a half-written repair must not pass for a bag
            raise
    return out, count


def _new_bag(writer_cls, out: Path):
    from rosbags.rosbag2 import StoragePlugin

    return writer_cls(out, version=writer_cls.VERSION_LATEST, storage_plugin=StoragePlugin.MCAP)
