"""Image messages -> numpy RGB: the sensor_msgs/Image layout decoded from a message's fields, so the same code
reads rclpy messages (the nodes, deer_ros.ros.image) and rosbags messages (bags, deer_ros.bag) without a ROS
install. Every malformed message raises ImageError with a reason a user can act on.

Size limits (`ImageLimits`) are checked on the header fields before any pixel is touched, so an accepted image
bounds the memory spent on it: the RGB copy is at most max_pixels * 3 bytes, and the model's resize (shorter
side to S, then a centre crop) makes at most an S x (S * max_aspect) intermediate, so a long thin image cannot
inflate into gigabytes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

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


@dataclass(frozen=True)
class ImageLimits:
    """Largest image accepted: pixel count and aspect ratio (long side / short side)."""

    max_pixels: int = 4096 * 2160  # DCI 4K; CALVIN's 200x200 and 84x84 and VGA..UHD robot cameras fit
    max_aspect: float = 4.0  # 32:9 ultra-wide is 3.56; a 100000x1 strip is refused

    def check(self, width: int, height: int) -> None:
        if width * height > self.max_pixels:
            raise ImageError(f"image {width}x{height} has {width * height} pixels, more than max_image_pixels = "
                             f"{self.max_pixels}: downscale it at the camera or raise max_image_pixels")
        aspect = max(width, height) / min(width, height)
        if aspect > self.max_aspect:
            raise ImageError(f"image {width}x{height} has aspect ratio {aspect:.3g}, more than max_image_aspect = "
                             f"{self.max_aspect:g}: crop it at the camera or raise max_image_aspect")


def check_image(msg: Any, limits: ImageLimits | None = None) -> tuple[int, tuple[int, int, int]]:
    """Validate the layout (and the size, given `limits`) of `msg`; return (channels, RGB channel order) or
    raise ImageError. Reads header fields only: nothing is allocated before the image is accepted."""
    spec = _ENCODINGS.get(msg.encoding)
    if spec is None:
        raise ImageError(
            f"unsupported encoding '{msg.encoding}'; publish one of {', '.join(SUPPORTED_ENCODINGS)}"
        )
    channels, (r, g, b) = spec
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ImageError(f"empty image: {width}x{height}")
    if limits is not None:
        limits.check(width, height)
    if step < width * channels:
        raise ImageError(f"step {step} is smaller than width*channels = {width * channels} for {msg.encoding}")
    size = len(msg.data)
    if size != step * height:
        raise ImageError(f"data has {size} bytes, expected step*height = {step}*{height} = {step * height}")
    return channels, (r, g, b)


def image_to_rgb(msg: Any, limits: ImageLimits | None = None) -> np.ndarray:
    """Return an (H, W, 3) uint8 RGB view of `msg` (a copy only when channels must be reordered or dropped)."""
    channels, (r, g, b) = check_image(msg, limits)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    rows = np.frombuffer(msg.data, dtype=np.uint8).reshape(height, step)  # a view of the message buffer
    pixels = rows[:, : width * channels].reshape(height, width, channels)
    if (r, g, b) == (0, 1, 2) and channels == 3:
        return pixels
    return np.ascontiguousarray(pixels[:, :, [r, g, b]])
