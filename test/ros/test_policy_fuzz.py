"""Seeded, bounded fuzzing of the deer_policy process over DDS (issue 18): hostile images, instructions,
parameter values and service calls from hypothesis generators, interleaved with good observations.

Every action heard is checked (finite, in range, the stamp of an observation that was sent, the layers of the
exit it names), the process must survive every case and keep acting. CI runs DEER_ROS_FUZZ_CASES (300) cases;
set it higher for a campaign, and DEER_ROS_FUZZ_SEED for other inputs. The counts per category are printed
(pytest -s) and written to DEER_ROS_FUZZ_REPORT (a JSON path) when set.
"""
from __future__ import annotations

import json
import os
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from policy_checks import assert_sane, exit_layers
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from sensor_msgs.msg import Image

from deer_ros.ros.client import PolicyClient, parameter_value, sim_time, stamp_key

pytestmark = pytest.mark.ros
CASES = int(os.environ.get("DEER_ROS_FUZZ_CASES", "300"))
SEED = int(os.environ.get("DEER_ROS_FUZZ_SEED", "0"))
CHECK_EVERY = 15  # cases between two good observations that must each get an action

ENCODINGS = ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "16UC1", "yuv422", "", "RGB8", "bayer_rggb8"]
CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}
PARAMETERS = ["flops_budget", "max_exit", "exit_ratio", "thresholds", "criterion", "budget_tracking", "model",
              "checkpoint", "device", "pair_slop_s", "camera_timeout_s", "max_image_pixels", "max_image_aspect",
              "max_instruction_chars", "diagnostics_period_s", "simulated_step_delay_s", "no_such_parameter"]
LIMITS = {"max_image_pixels": 4096 * 2160, "max_image_aspect": 4.0, "camera_timeout_s": 1.0, "pair_slop_s": 0.02,
          "max_instruction_chars": 1000}

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
numbers = st.one_of(finite, st.just(float("nan")), st.just(float("inf")), st.floats(-1e-9, 1e-9),
                    st.floats(0, 20), st.integers(-2**63, 2**63 - 1), st.integers(-5, 70))


@st.composite
def images(draw):
    """Mostly plausible, often broken sensor_msgs/Image: sizes, aspect, encodings, steps, data, stamps."""
    encoding = draw(st.sampled_from(ENCODINGS))
    shape = draw(st.one_of(st.tuples(st.integers(1, 256), st.integers(1, 256)),
                           st.tuples(st.integers(0, 3), st.integers(0, 5000)),
                           st.tuples(st.integers(1, 20000), st.integers(1, 3)),
                           st.tuples(st.integers(2000, 2300), st.integers(3900, 4200)),
                           st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))))
    height, width = shape if draw(st.booleans()) else shape[::-1]
    channels = CHANNELS.get(encoding, draw(st.integers(1, 4)))
    step = width * channels + draw(st.sampled_from([0, 0, 0, 1, 7, -1]))
    size = max(step, 0) * height + draw(st.sampled_from([0, 0, 0, -1, 1, -step]))
    if size > 2_000_000:  # bound what one case sends: a huge header comes with a short buffer
        size = draw(st.sampled_from([0, 1, 1000]))
    image = Image(height=height, width=width, encoding=encoding, step=max(0, min(step, 2**32 - 1)),
                  data=bytes([draw(st.integers(0, 255))]) * max(size, 0))
    image.header.stamp.sec = draw(st.one_of(st.integers(0, 2000), st.integers(-2**31, 2**31 - 1)))
    image.header.stamp.nanosec = draw(st.one_of(st.integers(0, 999_999_999), st.integers(0, 2**32 - 1)))
    image.header.frame_id = draw(st.text(max_size=30))
    return draw(st.sampled_from(["static", "gripper"])), image


instructions = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=st.sampled_from(["\u200b", "\u200c", "\u2060", " ", "\t", "\n", "\u0301", "\x00"]),
            max_size=50),
    st.builds(lambda c, n: c * n, st.characters(), st.integers(900, 5000)),
    st.sampled_from(["open the drawer", "push the blue block left", "lift the red block"]),
)


@st.composite
def parameter_changes(draw):
    """One or a few parameters with values of any type (and unknown type codes) for set_parameters(_atomically)."""
    def one():
        name = draw(st.sampled_from(PARAMETERS))
        value = draw(st.one_of(numbers, st.booleans(), st.text(max_size=20), st.none(),
                               st.lists(numbers, max_size=8), st.sampled_from(["tiny", "of3b", "action_consistency",
                                                                               "fp16", "cpu"])))
        if isinstance(value, list):
            value = [v for v in value if isinstance(v, float)] if draw(st.booleans()) else \
                ParameterValue(type=ParameterType.PARAMETER_INTEGER_ARRAY,
                               integer_array_value=[int(v) % 1000 for v in value if np.isfinite(v)])
        if draw(st.integers(0, 30)) == 0:  # a type code rclpy does not know
            value = ParameterValue(type=draw(st.integers(10, 255)))
        return ParameterMsg(name=name, value=parameter_value(value))
    return [one() for _ in range(draw(st.integers(1, 3)))], draw(st.booleans())


cases = st.one_of(st.tuples(st.just("image"), images()), st.tuples(st.just("instruction"), instructions),
                  st.tuples(st.just("parameter"), parameter_changes()),
                  st.tuples(st.just("reset"), st.integers(0, 10**6)))  # a payload, as hypothesis repeats no case


class Campaign:
    """The node under fuzz, what was sent, and the running counts."""

    def __init__(self, policy: PolicyClient):
        self.policy = policy
        self.exits = exit_layers(policy.proc.output())
        self.counts: Counter = Counter()
        self.sent: set = set()
        self.t = 10.0
        self.checked = 0
        self.cases = 0

    def run(self, kind: str, payload) -> None:
        self.cases += 1
        self.counts[kind] += 1
        getattr(self, f"_{kind}")(payload)
        self.policy.spin_for(0.002)
        assert self.policy.proc.running, f"deer_policy died on a {kind} case:\n{self.policy.proc.output()[-3000:]}"
        if self.cases % CHECK_EVERY == 0:
            self.check_acting()

    def _image(self, payload) -> None:
        camera, image = payload
        if image.header.stamp.sec >= 0 and image.header.stamp.nanosec < 10**9:
            self.sent.add(stamp_key(image.header.stamp))
        self.policy.publish_image(camera, image)

    def _instruction(self, text: str) -> None:
        self.policy.publish_instruction(text)

    def _parameter(self, payload) -> None:
        params, atomic = payload
        policy = self.policy
        if any(p.value.type > ParameterType.PARAMETER_STRING_ARRAY for p in params):
            # rclpy cannot read the request and sends no reply (README, known limits): do not wait for one
            policy.set_parameters(params, wait=False)
            self.counts["parameter_unknown_type"] += 1
            return
        if atomic:
            accepted = policy.set_parameters(params, atomically=True).successful
        else:
            accepted = any(r.successful for r in policy.set_parameters(params))
        self.counts["parameter_accepted" if accepted else "parameter_refused"] += 1

    def _reset(self, _) -> None:
        self.policy.reset()

    def check_acting(self) -> None:
        """A good observation gets a sane action (limits the fuzz may have tightened are put back first)."""
        policy = self.policy
        for name, value in LIMITS.items():
            if policy.get_parameter(name) != value:
                assert policy.set_parameter(name, value).successful
        self.t += 1.0
        self.sent.add(stamp_key(sim_time(self.t)))
        policy.publish_instruction("open the drawer")
        policy.spin_for(0.05)
        policy.act(self.t, timeout=60)
        self.checked += 1
        for action in policy.actions:
            assert_sane(action, self.sent, self.exits)

    def report(self) -> dict:
        counts = self.policy.counts()
        report = {"seed": SEED, "total_cases": self.cases, "cases": dict(self.counts),
                  "actions": len(self.policy.actions),
                  "unsafe_actions": 0, "crashes": 0, "acting_checks": self.checked,
                  "node_counters": {k: counts[k] for k in sorted(counts) if counts[k].isdigit()},
                  "peak_rss_mb": peak_rss_mb(self.policy.proc.proc.pid)}
        print("\nfuzz report:", json.dumps(report, indent=1))
        if os.environ.get("DEER_ROS_FUZZ_REPORT"):
            with open(os.environ["DEER_ROS_FUZZ_REPORT"], "w") as f:
                json.dump(report, f, indent=1)
        return report


def peak_rss_mb(pid: int) -> float:
    """VmHWM (the peak resident set size) of a process, in MiB."""
    with open(f"/proc/{pid}/status") as f:
        line = next(line for line in f if line.startswith("VmHWM"))
    return int(line.split()[1]) / 1024


def test_fuzzed_inputs_never_kill_the_node_or_give_an_unsafe_action(policy):
    campaign = Campaign(policy)
    campaign.check_acting()

    @seed(SEED)
    @settings(max_examples=CASES, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(cases)
    def case(drawn) -> None:
        campaign.run(*drawn)

    case()
    campaign.check_acting()
    report = campaign.report()
    assert report["cases"].get("image", 0) > 0 and report["cases"].get("parameter", 0) > 0
    assert report["acting_checks"] >= CASES // CHECK_EVERY


LARGEST_IMAGES = r"""
import sys
import numpy as np
from builtin_interfaces.msg import Time
from deer_ros.exits.controller import FixedExit
from deer_ros.model.factory import load_policy
from deer_ros.ros.image import ImageConverter, ImageLimits, rgb_to_image

def peak_mb():
    with open("/proc/self/status") as f:
        return int(next(l for l in f if l.startswith("VmHWM")).split()[1]) / 1024

import torch
torch.set_num_threads(1)
policy = load_policy(preset="tiny")
converter = ImageConverter(limits=ImageLimits())
rng = np.random.default_rng(0)
small = rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)
policy.step(small, small, "open the drawer", FixedExit(3))
print("baseline", peak_mb())
for h, w in [(2160, 4096), (1024, 4096), (4096, 1024)]:  # the most pixels, the widest and the tallest accepted
    msg = rgb_to_image(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), Time(sec=1), "camera")
    rgb = converter.to_rgb(msg)
    policy.step(rgb, rgb, "open the drawer", FixedExit(3))
    print(f"{w}x{h}", peak_mb(), msg.height * msg.step / 2**20)
"""


def test_the_largest_accepted_image_keeps_memory_bounded():
    """The node's path for the largest accepted images (conversion, then a policy step on both cameras), in a
    process of its own so its peak RSS (VmHWM) is theirs alone: it grows by a few copies of the image, not by
    gigabytes (issue 18 item 3: one 300 KB strip cost +1.9 GB). Measured outside DDS: a 25 MiB best-effort
    sample does not cross this machine's default UDP buffers reliably."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", LARGEST_IMAGES], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line.split() for line in out.stdout.splitlines()]
    baseline = float(rows[0][1])
    print(f"\npeak RSS with 200x200 images: {baseline:.0f} MiB")
    for name, peak, frame_mb in rows[1:]:
        growth = float(peak) - baseline
        print(f"peak RSS after {name} rgb8 ({float(frame_mb):.1f} MiB a frame): {float(peak):.0f} MiB (+{growth:.0f})")
        assert growth < 12 * float(frame_mb) + 50, f"{name}: +{growth:.0f} MiB for a {frame_mb} MiB frame"
