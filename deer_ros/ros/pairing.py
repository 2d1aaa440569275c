"""Pair static and gripper images by stamp, keeping only the newest pair (ROS-free, unit-tested).

Cameras run at their own rates and the model may be slower than both: the pairer holds a few recent frames per
camera, matches the closest stamps within `slop`, and keeps one pending pair. A pair that is replaced before the
model took it is counted as dropped.

Time jumps (a simulator reset) are judged on pairs, not on single frames: a jump is a new pair stamped more than
`slop` before the previous pair. A pair needs both cameras to agree on the time, so one frame with a stray stamp
(+1000 s, -1000 s, 0) pairs with nothing and changes nothing, and a camera running one frame behind the other
still pairs in order. After a real reset both cameras go back together: their first common pair is marked
`after_jump` (the buffers are cleared) so the consumer resets the policy's history before acting on it.
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
    received_ns: int       # monotonic time the later of the two arrived (for latency)
    frame_id: str = ""
    gripper_stamp_ns: int = 0
    after_jump: bool = False  # the stamps went back before this pair: reset the history first

    @property
    def key(self) -> tuple[int, int]:
        """Identifies the observation: a re-sent frame has the same key."""
        return self.stamp_ns, self.gripper_stamp_ns


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
        self._last_pair_ns: int | None = None
        self._lock = threading.Condition()
        self.stats = PairStats()

    def add(self, camera: str, stamp_ns: int, image: Any, received_ns: int, frame_id: str = "") -> bool:
        """Add a frame; returns True when it completed a pair stamped before the previous pair (a time jump)."""
        with self._lock:
            mine, other = self._frames[camera], self._frames[GRIPPER if camera == STATIC else STATIC]
            match = min(other, key=lambda f: abs(f[0] - stamp_ns), default=None)
            if match is None or abs(match[0] - stamp_ns) > self.slop_ns:
                if len(mine) == mine.maxlen:
                    self.stats.unpaired += 1
                mine.append((stamp_ns, image, frame_id))
                return False
            # Frames older than the match can never pair with anything newer: drop them.
            while other and other[0][0] <= match[0]:
                other.popleft()
            frame = (stamp_ns, image, frame_id)
            static, gripper = (frame, match) if camera == STATIC else (match, frame)
            jumped = self._last_pair_ns is not None and static[0] < self._last_pair_ns - self.slop_ns
            if jumped:
                for frames in self._frames.values():
                    frames.clear()
                self.stats.time_jumps += 1
            self._last_pair_ns = static[0]
            # a jump stays marked until the consumer takes a pair, even when a newer pair replaces this one
            after_jump = jumped or (self._pending is not None and self._pending.after_jump)
            if self._pending is not None:
                self.stats.dropped += 1
            self._pending = Pair(static[0], static[1], gripper[1], received_ns, static[2], gripper[0], after_jump)
            self.stats.pairs += 1
            self._lock.notify_all()
            return jumped

    def take(self, timeout: float | None = None) -> Pair | None:
        """The newest pair (waiting up to `timeout` seconds for one, or for `wake`), or None."""
        with self._lock:
            if self._pending is None and timeout:
                self._lock.wait(timeout)
            pair, self._pending = self._pending, None
            return pair

    def clear(self) -> None:
        with self._lock:
            for frames in self._frames.values():
                frames.clear()
            self._pending = None
            self._last_pair_ns = None

    def wake(self) -> None:
        """Wake a thread blocked in take() (a queued command, shutdown)."""
        with self._lock:
            self._lock.notify_all()
