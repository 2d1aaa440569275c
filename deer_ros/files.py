"""Atomic file writes: a reader (or a crash) never sees half a file, and a failed write leaves the old one intact.

Every writer of results that someone may read while it runs, or resume from after a crash (search logs,
training states, recorded CALVIN splits, evaluation reports), goes through here.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary sibling of `path` to write to; renamed to `path` when the block ends without an exception,
    removed otherwise (parents are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)  # atomic on POSIX (same folder, same file system)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Write `path` through `write(file)` (a binary file object), atomically; returns the path."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)
