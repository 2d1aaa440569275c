"""sensor_msgs/Image <-> numpy, without copies where the layout allows it.

ROS 2 `cv_bridge` is used when it is importable (a normal ROS 2 install); otherwise the built-in decoder
(deer_ros.images, shared with the bag reader) gives the same arrays. Size limits: deer_ros.images.ImageLimits.
"""
from __future__ import annotations

import numpy as np

from builtin_interfaces.msg import Time
from sensor_msgs.msg import Image

from deer_ros.images import (  # noqa: F401 - re-exported: the nodes' image API
    SUPPORTED_ENCODINGS, ImageError, ImageLimits, check_image, image_to_rgb,
)


def _ros_cv_bridge():
    """The ROS 2 cv_bridge, or None. The PyPI `cv-bridge` is a ROS 1 port that breaks with NumPy 2: skip it."""
    try:
        from cv_bridge import CvBridge  # type: ignore[import-not-found]
    except Exception:  # noqa: BLE001 - any import failure means "not usable here"
        return None
    return CvBridge() if hasattr(CvBridge, "imgmsg_to_cv2") else None


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

    def __init__(self, prefer_cv_bridge: bool = True, limits: ImageLimits | None = None) -> None:
        self._bridge = _ros_cv_bridge() if prefer_cv_bridge else None
        self.backend = "cv_bridge" if self._bridge is not None else "builtin"
        self.limits = limits

    def to_rgb(self, msg: Image) -> np.ndarray:
        if self._bridge is None or msg.encoding not in SUPPORTED_ENCODINGS:
            return image_to_rgb(msg, self.limits)
        check_image(msg, self.limits)  # the same validation and messages whichever backend converts
        try:
            out = self._bridge.imgmsg_to_cv2(msg, desired_encoding="rgb8")
        except Exception as exc:  # noqa: BLE001 - cv_bridge raises its own CvBridgeError type
            raise ImageError(f"cv_bridge could not convert the image: {exc}") from exc
        return out if out.ndim == 3 else np.repeat(out[:, :, None], 3, axis=2)
