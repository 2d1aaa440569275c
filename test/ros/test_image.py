"""Image conversion: every accepted encoding gives the same RGB array; malformed images are refused."""
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import Image

from deer_ros.ros.image import ImageConverter, ImageError, ImageLimits, image_to_rgb, rgb_to_image

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)


def _msg(pixels: np.ndarray, encoding: str, pad: int = 0) -> Image:
    h, w = pixels.shape[:2]
    c = 1 if pixels.ndim == 2 else pixels.shape[2]
    rows = pixels.reshape(h, w * c)
    rows = np.concatenate([rows, np.zeros((h, pad), np.uint8)], axis=1)
    return Image(height=h, width=w, encoding=encoding, step=w * c + pad, data=rows.tobytes())


@pytest.mark.parametrize(
    "encoding,pixels",
    [
        ("rgb8", RGB),
        ("bgr8", RGB[:, :, ::-1]),
        ("rgba8", np.concatenate([RGB, np.full((5, 7, 1), 255, np.uint8)], axis=2)),
        ("bgra8", np.concatenate([RGB[:, :, ::-1], np.zeros((5, 7, 1), np.uint8)], axis=2)),
    ],
)
@pytest.mark.parametrize("pad", [0, 3])
def test_color_encodings_give_rgb(encoding, pixels, pad):
    out = image_to_rgb(_msg(np.ascontiguousarray(pixels), encoding, pad))
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3)
    np.testing.assert_array_equal(out, RGB)


def test_mono8_is_repeated_to_three_channels():
    gray = RGB[:, :, 0].copy()
    out = image_to_rgb(_msg(gray, "mono8"))
    np.testing.assert_array_equal(out, np.stack([gray] * 3, axis=2))


def test_rgb8_without_padding_is_a_view_of_the_message_buffer():
    msg = _msg(RGB, "rgb8")
    out = image_to_rgb(msg)
    assert not out.flags.owndata  # no copy was made


def test_round_trip_through_rgb_to_image():
    msg = rgb_to_image(RGB, Time(sec=3, nanosec=5), "static_camera")
    assert (msg.encoding, msg.step, msg.header.frame_id) == ("rgb8", 21, "static_camera")
    np.testing.assert_array_equal(image_to_rgb(msg), RGB)


@pytest.mark.parametrize(
    "mutate,reason",
    [
        (lambda m: setattr(m, "encoding", "16UC1"), "unsupported encoding '16UC1'"),
        (lambda m: setattr(m, "encoding", "yuv422"), "unsupported encoding"),
        (lambda m: setattr(m, "step", 20), "step 20 is smaller than width*channels = 21"),
        (lambda m: setattr(m, "height", 6), "expected step*height"),
        (lambda m: setattr(m, "data", b""), "data has 0 bytes"),
        (lambda m: (setattr(m, "width", 0), setattr(m, "height", 0)), "empty image"),
    ],
)
def test_malformed_images_are_refused_with_a_reason(mutate, reason):
    msg = _msg(RGB, "rgb8")
    mutate(msg)
    with pytest.raises(ImageError, match=reason.replace("*", r"\*").replace("(", r"\(")):
        image_to_rgb(msg)


def test_converter_matches_builtin_whichever_backend():
    converter = ImageConverter()
    assert converter.backend in ("cv_bridge", "builtin")
    for enc, pixels in [("rgb8", RGB), ("bgr8", RGB[:, :, ::-1])]:
        np.testing.assert_array_equal(converter.to_rgb(_msg(np.ascontiguousarray(pixels), enc)), RGB)
    with pytest.raises(ImageError):
        converter.to_rgb(_msg(RGB, "32FC1"))


@pytest.mark.parametrize("width,height,reason", [(100000, 1, "aspect ratio 1e\\+05"), (5, 21, "aspect ratio 4.2"),
                                                  (4097, 2160, "more than max_image_pixels")])
def test_images_beyond_the_limits_are_refused_before_any_pixel_is_read(width, height, reason):
    # data is empty: the size check runs on the header alone, before the layout check could even look at it
    msg = Image(height=height, width=width, encoding="rgb8", step=width * 3, data=b"")
    with pytest.raises(ImageError, match=reason):
        image_to_rgb(msg, ImageLimits())
    with pytest.raises(ImageError, match=reason):
        ImageConverter(limits=ImageLimits()).to_rgb(msg)


def test_calvin_and_common_camera_sizes_fit_the_default_limits():
    limits = ImageLimits()
    for width, height in [(200, 200), (84, 84), (640, 480), (1280, 720), (1920, 1080), (3840, 2160),
                          (4096, 2160), (2208, 1242)]:
        limits.check(width, height)
