"""Pair static and gripper images by stamp, keeping only the newest pair (ROS-free, unit-tested).

Cameras run at their own rates and the model may be slower than both: the pairer holds a few recent frames per
camera, matches the closest stamps within `slop`, and keeps one pending pair. A pair that is replaced before the
model took it is counted as dropped. Stamps going back by more than `slop` mean the clock was reset (a simulator
restart): the buffers are cleared and the caller is told so it can reset the policy's history.
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

STATIC, GRIPPER = "static", "gripper"


@dataclass
class Pair:
    stamp_ns: int          # the static image's stamp (the action is stamped with it)
    static: Any            # (H, W, 3) uint8
    gripper: Any
    received_ns: int       # node-clock time the later of the two arrived (for latency)
    frame_id: str = ""


@dataclass
class PairStats:
    pairs: int = 0
    dropped: int = 0          # pairs replaced before the model took them
    unpaired: int = 0         # frames that aged out without a partner
    time_jumps: int = 0


class StampPairer:
    def __init__(self, slop_ns: int, depth: int = 4) -> None:
        self.slop_ns = slop_ns
        self._frames = {STATIC: deque(maxlen=depth), GRIPPER: deque(maxlen=depth)}
        self._pending: Pair | None = None
        self._last_stamp_ns: int | None = None
        self._lock = threading.Condition()
        self.stats = PairStats()

    def add(self, camera: str, stamp_ns: int, image: Any, received_ns: int, frame_id: str = "") -> bool:
        """Add a frame; returns True when the stamps jumped back (buffers were cleared)."""
        with self._lock:
            jumped = self._last_stamp_ns is not None and stamp_ns < self._last_stamp_ns - self.slop_ns
            if jumped:
                self._clear_locked()
                self.stats.time_jumps += 1
            last = self._last_stamp_ns
            self._last_stamp_ns = stamp_ns if jumped or last is None else max(last, stamp_ns)
            mine, other = self._frames[camera], self._frames[GRIPPER if camera == STATIC else STATIC]
            match = min(other, key=lambda f: abs(f[0] - stamp_ns), default=None)
            if match is None or abs(match[0] - stamp_ns) > self.slop_ns:
                if len(mine) == mine.maxlen:
                    self.stats.unpaired += 1
                mine.append((stamp_ns, image, frame_id))
                return jumped
            # Frames older than the match can never pair with anything newer: drop them.
            while other and other[0][0] <= match[0]:
                other.popleft()
            this = (stamp_ns, image, frame_id)
            static, gripper = (this, match) if camera == STATIC else (match, this)
            if self._pending is not None:
                self.stats.dropped += 1
            self._pending = Pair(static[0], static[1], gripper[1], received_ns, static[2])
            self.stats.pairs += 1
            self._lock.notify_all()
            return jumped

    def take(self, timeout: float | None = None) -> Pair | None:
        """The newest pair (waiting up to `timeout` seconds for one), or None."""
        with self._lock:
            if self._pending is None and timeout:
                self._lock.wait(timeout)
            pair, self._pending = self._pending, None
            return pair

    def clear(self) -> None:
        with self._lock:
            self._clear_locked()
            self._last_stamp_ns = None

    def wake(self) -> None:
        """Wake a thread blocked in take() (shutdown)."""
        with self._lock:
            self._lock.notify_all()

    def _clear_locked(self) -> None:
        for frames in self._frames.values():
            frames.clear()
        self._pending = None
