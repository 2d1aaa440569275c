"""Header stamps as integer nanoseconds: the key that pairs cameras and matches an action to its observation.

Works on any stamp with `sec` and `nanosec` (builtin_interfaces/Time from rclpy or from a bag), without rclpy.
"""
from __future__ import annotations

from typing import Any

NS_PER_S = 1_000_000_000


def stamp_ns(stamp: Any) -> int | None:
    """A stamp in nanoseconds, or None when it is not a valid time (negative, nanosec >= 1e9)."""
    sec, nanosec = int(stamp.sec), int(stamp.nanosec)
    if sec < 0 or not 0 <= nanosec < NS_PER_S:
        return None
    return sec * NS_PER_S + nanosec
