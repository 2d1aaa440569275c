"""CalvinSim's own logic, against FakeCalvinEnv (calvin_env itself cannot be installed here)."""
from __future__ import annotations

import sys

import numpy as np
import pytest
from fake_calvin_env import FakeCalvinEnv, FakeTaskOracle

from deer_ros.calvin.protocol import InvalidAction
from deer_ros.calvin.sim import CalvinEnvMissing, CalvinSim, require_calvin_env, to_env_action


def test_to_env_action_clips_pose_and_makes_the_gripper_plus_or_minus_one():
    out = to_env_action(np.array([2.0, -3.0, 0.5, 1.5, -1.5, 0.0, 0.3], np.float32))
    np.testing.assert_array_equal(out, [1, -1, 0.5, 1, -1, 0, 1])
    assert out.dtype == np.float64
    assert to_env_action([0] * 7)[6] == -1.0  # not open means close
    assert to_env_action([0] * 6 + [-0.2])[6] == -1.0


@pytest.mark.parametrize("action, message", [
    ([0] * 6, "7 values"),
    ([0] * 6 + [float("nan")], "non-finite"),
    ([float("inf")] + [0] * 6, "non-finite"),
    (["a"] * 7, "not a numeric action"),
])
def test_to_env_action_refuses_bad_actions(action, message):
    with pytest.raises(InvalidAction, match=message):
        to_env_action(action)


def _sim() -> tuple[CalvinSim, FakeCalvinEnv, FakeTaskOracle]:
    env, oracle = FakeCalvinEnv(), FakeTaskOracle()
    return CalvinSim("unused-split", env=env, task_oracle=oracle), env, oracle


def test_step_applies_a_clipped_copy_and_counts():
    sim, env, _ = _sim()
    sim.reset(np.zeros(15), np.zeros(24))
    action = np.array([3.0, 0, 0, 0, 0, -2.0, 0.9])
    obs, applied = sim.step(action)
    np.testing.assert_array_equal(action, [3.0, 0, 0, 0, 0, -2.0, 0.9])  # the caller's array is untouched
    np.testing.assert_array_equal(applied, [1, 0, 0, 0, 0, -1, 1])
    np.testing.assert_array_equal(env.received[0], applied)
    assert obs.robot_obs[0] == pytest.approx(0.02) and obs.robot_obs[5] == pytest.approx(-0.05)
    assert obs.rgb_static.dtype == np.uint8 and obs.rgb_static.shape == (8, 8, 3)
    sim.step(np.zeros(7))
    assert sim.steps == 2


def test_reset_passes_the_full_state_and_keeps_the_last_gripper_command():
    sim, env, _ = _sim()
    robot_obs = np.arange(15) / 100
    robot_obs[14] = -1
    obs = sim.reset(robot_obs, np.arange(24.0))
    np.testing.assert_array_equal(obs.robot_obs[:6], robot_obs[:6])
    np.testing.assert_array_equal(obs.scene_obs, np.arange(24.0))
    assert env.resets == 1
    # calvin_env's reset leaves the gripper command as it was (CALVIN's own evaluation relies on the same):
    # the first step of a chain sets it.
    assert obs.robot_obs[14] == 1
    sim.step([0, 0, 0, 0, 0, 0, -1])
    assert sim.reset(np.zeros(15), np.zeros(24)).robot_obs[14] == -1


def test_close_closes_the_simulator_once():
    sim, env, _ = _sim()
    sim.close()
    sim.close()
    assert env.closed and sim.env is None


def test_success_is_judged_against_the_subtask_start():
    sim, _, oracle = _sim()
    sim.reset(np.zeros(15), np.zeros(24))
    with pytest.raises(RuntimeError, match="before start_subtask"):
        sim.subtask_done("open_drawer")
    for _ in range(4):
        sim.step([1, 0, 0, 0, 0, 0, 1])  # 8 cm along +x
    sim.start_subtask()  # the subtask starts here: the 8 cm before it do not count
    assert not sim.subtask_done("open_drawer")
    sim.step([1, 0, 0, 0, 0, 0, 1])
    assert not sim.subtask_done("open_drawer")  # 2 cm since the start
    for _ in range(4):
        sim.step([1, 0, 0, 0, 0, 0, 1])
    assert sim.subtask_done("open_drawer")  # 10 cm > 9 cm
    assert oracle.calls == 3


def test_missing_calvin_env_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "calvin_env", None)  # makes `import calvin_env` fail, as on this machine
    with pytest.raises(CalvinEnvMissing, match="git clone https://github.com/mees/calvin_env.git"):
        require_calvin_env()
    with pytest.raises(CalvinEnvMissing, match="pip install --no-deps -e calvin_env") as missing:
        CalvinSim("data/calvin_sample/validation")
    message = str(missing.value)
    assert "opencv-python-headless" in message and "gitpython" in message and "pybullet==3.2.7" in message
    assert "Do not install tacto" in message
    # An injected env still needs the oracle from calvin_env unless one is given.
    with pytest.raises(CalvinEnvMissing):
        CalvinSim("x", env=FakeCalvinEnv())
