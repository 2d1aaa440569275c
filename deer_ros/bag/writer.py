"""Writing rosbag2 bags (MCAP by default) that a ROS 2 install's `ros2 bag info/play` accepts.

Crash safety: rosbags' MCAP writer keeps the open chunk in memory and writes the summary, footer and
metadata.yaml only on close. `BagWriter.flush()` (the recorder calls it about once a second) writes the open
chunk out and flushes the file, so a killed recorder loses at most the messages since the last flush;
`deer_ros.bag.repair` turns the footer-less file it leaves into a complete bag.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from deer_ros.bag.types import TopicSpec, qos_profile, rosbags, typestore


class BagWriter:
    """A new rosbag2 bag at `path` (a folder that must not exist yet); `storage` 'mcap' or 'sqlite3'."""

    def __init__(self, path: str | os.PathLike, storage: str = "mcap") -> None:
        rosbags()
        from rosbags.rosbag2 import StoragePlugin, Writer

        plugins = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
        if storage not in plugins:
            raise ValueError(f"unknown bag storage {storage!r}; use one of {sorted(plugins)}")
        self.path = Path(path).expanduser()
        if self.path.exists():
            raise FileExistsError(f"{self.path}: exists already; give a new bag folder (bags are never overwritten)")
        self._writer = Writer(self.path, version=Writer.VERSION_LATEST, storage_plugin=plugins[storage])
        self._writer.open()
        self._connections: dict[str, Any] = {}
        self.store = typestore()

    def add_topic(self, spec: TopicSpec) -> None:
        """Register a topic with its type, message definition and the QoS its publisher offers."""
        if spec.name not in self._connections:
            self._connections[spec.name] = self._writer.add_connection(
                spec.name, spec.msgtype, typestore=self.store, offered_qos_profiles=[qos_profile(spec.latched)])

    def write_raw(self, topic: str, timestamp_ns: int, data: bytes | memoryview) -> None:
        """Write one CDR-serialized message received at `timestamp_ns` (the bag's log time)."""
        self._writer.write(self._connections[topic], int(timestamp_ns), data)

    def write(self, topic: str, timestamp_ns: int, message: object) -> None:
        """Serialize a rosbags message object and write it."""
        msgtype = self._connections[topic].msgtype
        self.write_raw(topic, timestamp_ns, self.store.serialize_cdr(message, msgtype))

    def set_custom_data(self, key: str, value: str) -> None:
        """A string entry in metadata.yaml's custom_data (written on close)."""
        self._writer.set_custom_data(key, value)

    def flush(self) -> None:
        """Put everything written so far on disk (see the module docstring): MCAP writes out its open chunk,
        sqlite3 commits its transaction (rosbags otherwise commits only on close)."""
        storage = self._writer.storage
        if hasattr(storage, "close_chunk") and storage.chunk.msgs:
            storage.close_chunk()
        if hasattr(storage, "bio"):
            storage.bio.flush()
        if hasattr(storage, "conn"):
            storage.conn.commit()

    def close(self) -> Path:
        self._writer.close()
        return self.path

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()
