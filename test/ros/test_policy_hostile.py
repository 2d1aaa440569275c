"""Hostile input against the deer_policy process (issue 18): each input that used to kill it or make it lie,
then proof that the node still acts correctly."""
from __future__ import annotations

import signal
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from policy_checks import exit_layers
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image

from deer_ros.ros.client import TEST_PATTERN, sim_time
from deer_ros.ros.image import rgb_to_image

STATIC, GRIPPER = TEST_PATTERN["static"], TEST_PATTERN["gripper"]

pytestmark = pytest.mark.ros


def test_negative_and_invalid_stamps_are_refused(policy):
    policy.act(1.0)
    for sec, nanosec in ((-1, 0), (-(2**31), 5), (3, 1_500_000_000)):
        image = rgb_to_image(STATIC, sim_time(2.0), "static")
        image.header.stamp.sec, image.header.stamp.nanosec = sec, nanosec
        policy.publish_image("static", image)
    policy.wait_count("bad_static_images", 3)
    assert "invalid stamp" in policy.counts()["last_error"]
    assert policy.proc.running
    policy.act(2.0)


@pytest.mark.parametrize("value", [0.5, 5, True, "0.5", None], ids=["double", "int", "bool", "string", "not_set"])
def test_a_scalar_for_thresholds_is_refused_through_both_services(policy, value):
    assert not policy.set_parameter("thresholds", value).successful
    assert not policy.set_parameters({"thresholds": value, "max_exit": 1}, atomically=True).successful
    assert policy.get_parameter("thresholds") == [] and policy.get_parameter("max_exit") == 0
    assert policy.describe_parameter("thresholds").type == ParameterType.PARAMETER_DOUBLE_ARRAY
    n_exits = len(exit_layers(policy.proc.output()))
    assert policy.set_parameter("thresholds", [0.5] * n_exits).successful  # a real list still works
    policy.act(1.0)


def test_oversized_and_long_thin_images_are_refused_before_any_allocation(policy):
    policy.act(1.0)
    strip = Image(height=100000, width=1, encoding="rgb8", step=3, data=bytes(300000))  # 300 KB
    strip.header.stamp = sim_time(2.0)
    policy.publish_image("static", strip)
    policy.wait_count("bad_static_images", 1)
    assert "max_image_aspect" in policy.counts()["last_error"]
    big = Image(height=2200, width=4100, encoding="mono8", step=4100, data=b"")  # refused on the header alone
    big.header.stamp = sim_time(2.0)
    policy.publish_image("gripper", big)
    policy.wait_count("bad_gripper_images", 1)
    assert "max_image_pixels" in policy.counts()["last_error"]
    assert policy.set_parameter("max_image_aspect", 0.5).successful is False  # the range says >= 1
    policy.act(2.0)
    assert policy.set_parameter("max_image_pixels", 100).successful  # the user's limit: CALVIN images now refused
    policy.send_observation(3.0)
    policy.wait_count("bad_static_images", 2)


def _ticks(policy, start: int, n: int, stray: dict | None = None, lag: bool = False) -> None:
    """n 30 Hz ticks from frame `start`; `stray` maps a frame to a bogus static stamp; `lag`: the static camera
    is one frame behind the gripper camera."""
    for k in range(start, start + n):
        t = k / 30
        policy.publish_clock(t)
        policy.publish_image("gripper", rgb_to_image(GRIPPER, sim_time(t), "gripper"))
        s = (k - 1) / 30 if lag else t
        policy.publish_image("static", rgb_to_image(STATIC, sim_time((stray or {}).get(k, s)), "static"))
        policy.spin_for(0.04)


def test_one_stray_stamp_or_a_lagging_camera_keeps_the_history(policy):
    base = 60_000  # frame 60000 = 2000 s of sim time, so that -1000 s is still a valid stamp
    policy.act(base / 30)
    policy.wait_count("history_resets", 1)  # the instruction
    resets, pairs, actions = (policy.count(k) for k in ("history_resets", "pairs", "actions"))
    for i, bogus in enumerate((+1000.0, -1000.0, None)):  # None: a stamp of 0
        k = base + 10 * (i + 1)
        _ticks(policy, k, 5, stray={k + 2: 0.0 if bogus is None else (k + 2) / 30 + bogus})
    policy.wait_count("pairs", pairs + 12)  # every tick but the stray ones paired
    _ticks(policy, base + 100, 30, lag=True)
    policy.act((base + 200) / 30)
    counts = policy.counts()
    print(f"\nstray stamps (+1000 s, -1000 s, 0) then 30 ticks of camera lag: time_jumps {counts['time_jumps']}, "
          f"history_resets {resets} -> {counts['history_resets']}, pairs {pairs} -> {counts['pairs']}, "
          f"actions {actions} -> {counts['actions']}, dropped_pairs {counts['dropped_pairs']}")
    assert int(counts["time_jumps"]) == 0 and int(counts["history_resets"]) == resets, counts
    # the lagging camera still pairs every tick (best-effort transport may lose the odd frame)
    assert int(counts["pairs"]) >= pairs + 12 + 25 and int(counts["actions"]) > actions + 5, counts


def test_a_model_that_outputs_nan_gives_error_health_with_the_counters(launch_node, client, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from deer_ros.model.checkpoint.folder import WEIGHTS_FILE
    from deer_ros.paths import demo_calibration, demo_checkpoint

    path = tmp_path / "nan_head"
    shutil.copytree(demo_checkpoint(), path)
    weights = load_file(str(path / WEIGHTS_FILE))
    for name, tensor in weights.items():
        if "head" in name and tensor.is_floating_point():
            tensor.fill_(float("nan"))
    save_file(weights, str(path / WEIGHTS_FILE))
    launch_node("deer_policy_node", params={"use_sim_time": True, "diagnostics_period_s": 0.2,
                                            "checkpoint": str(path), "calibration": str(demo_calibration())})
    policy = client
    policy.wait_for_policy()
    policy.instruct("open the drawer")
    policy.send_observation(1.0)
    status = policy.wait_status(DiagnosticStatus.ERROR)
    assert "not publishing" in status.message and "nonfinite_actions 1" in status.message, status.message
    assert policy.actions == []


def _startup_failure(launch_node, tmp_path, params: dict, code: int = 1) -> str:
    proc = launch_node("deer_policy_node", params=params)
    proc.expected_exit_code = code
    assert proc.wait(timeout=90) == code, proc.output()
    out = proc.output()
    assert "Traceback" not in out, out
    fatal = [line for line in out.splitlines() if "FATAL" in line]
    assert len(fatal) == 1, out
    return fatal[0]


@pytest.mark.parametrize("case", ["empty", "corrupt_npz", "random_safetensors", "dev_null"])
def test_start_up_errors_are_one_clear_line(launch_node, tmp_path, case):
    rng = np.random.default_rng(1)
    if case == "empty":
        (tmp_path / "empty.pt").write_bytes(b"")
        line = _startup_failure(launch_node, tmp_path, {"checkpoint": str(tmp_path / "empty.pt")})
        assert "empty.pt is empty" in line
    elif case == "corrupt_npz":
        from deer_ros.paths import demo_calibration

        (tmp_path / "cal.npz").write_bytes(demo_calibration().read_bytes()[:300])
        line = _startup_failure(launch_node, tmp_path, {"calibration": str(tmp_path / "cal.npz")})
        assert str(tmp_path / "cal.npz") in line and "calibration" in line
    elif case == "random_safetensors":
        (tmp_path / "w.safetensors").write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
        line = _startup_failure(launch_node, tmp_path, {"checkpoint": str(tmp_path / "w.safetensors")})
        assert "w.safetensors" in line
    else:
        line = _startup_failure(launch_node, tmp_path, {"checkpoint": "/dev/null"})
        assert "/dev/null is not a regular file" in line


def test_sigterm_while_the_model_loads_exits_cleanly(launch_node):
    proc = launch_node("deer_policy_node")
    time.sleep(1.5)  # inside the Python start-up or the model load: either must end cleanly
    assert proc.stop(signal.SIGTERM) == 0
    assert "Traceback" not in proc.output()


def test_parameter_types_are_fixed_and_ranges_follow_the_model(policy):
    assert not policy.set_parameter("flops_budget", "lots").successful
    assert policy.describe_parameter("flops_budget").type == ParameterType.PARAMETER_DOUBLE
    assert policy.set_parameter("flops_budget", 0).successful  # an integer for a double is still taken
    exits = exit_layers(policy.proc.output())
    described = policy.describe_parameter("max_exit").integer_range[0]
    assert (described.from_value, described.to_value) == (0, len(exits))
    refused = policy.set_parameter("max_exit", len(exits) + 1)
    assert not refused.successful and f"Max: {len(exits)}" in refused.reason
    assert policy.set_parameter("max_exit", len(exits)).successful
    policy.act(1.0)


def test_instructions_too_long_or_invisible_are_refused(policy):
    policy.act(1.0)
    policy.publish_instruction("x" * 4_000_000)
    policy.wait_count("long_instructions", 1)
    policy.publish_instruction("\u200b\u200c\u2060 \u200b")
    policy.wait_count("invisible_instructions", 1)
    counts = policy.counts()
    assert counts["instruction"] == "open the drawer" and len(counts["last_error"]) < 200
    assert int(counts["instruction_sequence"]) == 1
    policy.act(2.0)


def test_a_second_node_with_the_same_name_is_reported(policy, launch_node):
    launch_node("deer_policy_node", params={"use_sim_time": True, "diagnostics_period_s": 0.2})
    policy.spin_until(lambda: policy.counts().get("duplicate_node_name") == "true", 90,
                            "the duplicate name in diagnostics")
    policy.spin_until(lambda: "another node is named /deer_policy" in policy.proc.output(), 30, "the warning")


def test_unknown_parameter_type_codes_and_negative_clock_do_not_kill_it(policy):
    policy.act(1.0)
    bogus = ParameterMsg(name="flops_budget", value=ParameterValue(type=200))
    policy.set_parameters([bogus], wait=False)  # rclpy cannot read it: no reply comes
    policy.wait_count("callback_errors", 1)
    negative = Clock()
    negative.clock.sec = -5
    policy.publisher(Clock, "/clock").publish(negative)
    policy.wait_count("callback_errors", 2)
    assert policy.proc.running
    assert policy.set_parameter("max_exit", 1).successful
    assert policy.act(2.0).exit_index == 1
