"""sensor_msgs/Image <-> numpy, without copies where the layout allows it.

ROS 2 `cv_bridge` is used when it is importable (a normal ROS 2 install); otherwise the built-in converter
below gives the same arrays. Every malformed message raises ImageError with a reason a user can act on.
"""
from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import Image

# encoding -> (channels, index of R, G, B within a pixel); mono8 repeats its one channel.
_ENCODINGS: dict[str, tuple[int, tuple[int, int, int]]] = {
    "rgb8": (3, (0, 1, 2)),
    "bgr8": (3, (2, 1, 0)),
    "rgba8": (4, (0, 1, 2)),
    "bgra8": (4, (2, 1, 0)),
    "mono8": (1, (0, 0, 0)),
}
SUPPORTED_ENCODINGS = tuple(_ENCODINGS)


class ImageError(ValueError):
    """A sensor_msgs/Image that cannot be turned into an RGB array."""


def _ros_cv_bridge():
    """The ROS 2 cv_bridge, or None. The PyPI `cv-bridge` is a ROS 1 port that breaks with NumPy 2: skip it."""
    try:
        from cv_bridge import CvBridge  # type: ignore[import-not-found]
    except Exception:  # noqa: BLE001 - any import failure means "not usable here"
        return None
    return CvBridge() if hasattr(CvBridge, "imgmsg_to_cv2") else None


def check_image(msg: Image) -> tuple[int, tuple[int, int, int]]:
    """Validate the layout of `msg`; return (channels, RGB channel order) or raise ImageError."""
    spec = _ENCODINGS.get(msg.encoding)
    if spec is None:
        raise ImageError(
            f"unsupported encoding '{msg.encoding}'; publish one of {', '.join(SUPPORTED_ENCODINGS)}"
        )
    channels, (r, g, b) = spec
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ImageError(f"empty image: {width}x{height}")
    if step < width * channels:
        raise ImageError(f"step {step} is smaller than width*channels = {width * channels} for {msg.encoding}")
    size = len(msg.data)
    if size != step * height:
        raise ImageError(f"data has {size} bytes, expected step*height = {step}*{height} = {step * height}")
    return channels, (r, g, b)


def image_to_rgb(msg: Image) -> np.ndarray:
    """Return an (H, W, 3) uint8 RGB view of `msg` (a copy only when channels must be reordered or dropped)."""
    channels, (r, g, b) = check_image(msg)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    rows = np.frombuffer(msg.data, dtype=np.uint8).reshape(height, step)  # a view of the message buffer
    pixels = rows[:, : width * channels].reshape(height, width, channels)
    if (r, g, b) == (0, 1, 2) and channels == 3:
        return pixels
    return np.ascontiguousarray(pixels[:, :, [r, g, b]])


def rgb_to_image(rgb: np.ndarray, stamp: Time, frame_id: str) -> Image:
    """Wrap an (H, W, 3) uint8 array as an rgb8 Image."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageError(f"expected an (H, W, 3) uint8 array, got {rgb.dtype} {rgb.shape}")
    msg = Image()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(rgb.shape[0]), int(rgb.shape[1])
    msg.encoding = "rgb8"
    msg.is_bigendian = 0
    msg.step = msg.width * 3
    msg.data = np.ascontiguousarray(rgb).tobytes()
    return msg


class ImageConverter:
    """Converts with ROS 2 cv_bridge when available, else with `image_to_rgb`; both give the same array."""

    def __init__(self, prefer_cv_bridge: bool = True) -> None:
        self._bridge = _ros_cv_bridge() if prefer_cv_bridge else None
        self.backend = "cv_bridge" if self._bridge is not None else "builtin"

    def to_rgb(self, msg: Image) -> np.ndarray:
        if self._bridge is None or msg.encoding not in _ENCODINGS:
            return image_to_rgb(msg)
        check_image(msg)  # the same validation and messages whichever backend converts
        try:
            out = self._bridge.imgmsg_to_cv2(msg, desired_encoding="rgb8")
        except Exception as exc:  # noqa: BLE001 - cv_bridge raises its own CvBridgeError type
            raise ImageError(f"cv_bridge could not convert the image: {exc}") from exc
        return out if out.ndim == 3 else np.repeat(out[:, :, None], 3, axis=2)
