"""The bridge against the REAL CALVIN simulator (calvin_env), when it is installed; skipped otherwise.

calvin_env is not on PyPI and CI cannot fetch it, so these run on a developer machine after the install steps
in docs/calvin.md (also printed in the skip reason). The simulator runs at about 11-19 steps/s on a 2-core
machine: the tests are marked slow and kept to a few hundred steps each.
"""
from __future__ import annotations

import json
import signal

import numpy as np
import pytest
from calvin_helpers import SAMPLE

from deer_ros.calvin.sim import CALVIN_ENV_INSTALL

try:
    import calvin_env  # noqa: F401
    HAVE_CALVIN_ENV = True
except ImportError:
    HAVE_CALVIN_ENV = False

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not HAVE_CALVIN_ENV, reason="needs the real calvin_env. " + CALVIN_ENV_INSTALL)]

VALIDATION = SAMPLE / "validation"
STATE = {"led": 0, "lightbulb": 0, "slider": "right", "drawer": "closed", "red_block": "table",
         "blue_block": "slider_right", "pink_block": "slider_left", "grasped": 0}
CHAIN = ["open_drawer", "turn_on_led", "move_slider_left", "lift_red_block_table", "stack_block"]


@pytest.fixture(scope="module")
def sim():
    from deer_ros.calvin.sim import CalvinSim

    s = CalvinSim(VALIDATION)
    yield s
    s.close()


def test_the_cameras_and_initial_state_are_calvins(sim):
    from deer_ros.calvin.protocol import initial_state_to_obs

    robot_obs, scene_obs = initial_state_to_obs(STATE)
    obs = sim.reset(robot_obs, scene_obs)
    assert obs.rgb_static.shape == (200, 200, 3) and obs.rgb_gripper.shape == (84, 84, 3)
    assert obs.rgb_static.dtype == np.uint8
    np.testing.assert_allclose(obs.scene_obs, scene_obs, atol=5e-3)  # blocks settle by a few mrad in one step
    np.testing.assert_allclose(obs.robot_obs[:3], robot_obs[:3], atol=2e-3)


def test_a_tactile_camera_in_the_split_config_is_dropped(tmp_path):
    """A split rendered with CALVIN's tactile sensor: get_env would need tacto; the adapter keeps the RGB ones."""
    import shutil

    from omegaconf import OmegaConf

    from deer_ros.calvin.sim import make_env

    (tmp_path / ".hydra").mkdir()
    conf = OmegaConf.load(VALIDATION / ".hydra" / "merged_config.yaml")
    conf.cameras.tactile = {"_target_": "calvin_env.camera.tactile_sensor.TactileSensor", "name": "tactile",
                            "width": 120, "height": 160, "digit_link_ids": [10, 12], "visualize_gui": False,
                            "config_path": "conf/digit_sensor/config_digit.yaml"}
    OmegaConf.save(conf, tmp_path / ".hydra" / "merged_config.yaml")
    env = make_env(tmp_path)
    try:
        assert sorted(env.get_obs()["rgb_obs"]) == ["rgb_gripper", "rgb_static"]
    finally:
        env.close()
        env.cid = -1
    shutil.rmtree(tmp_path / ".hydra")


def test_the_sample_episodes_replayed_in_the_simulator_solve_their_tasks(sim):
    from deer_ros.calvin.dataset import CalvinSplit

    solved = []
    for split_name in ("training", "validation"):
        split = CalvinSplit(SAMPLE / split_name)
        for segment in split.segments():
            first = split.frame(segment.start, keys=("robot_obs", "scene_obs"))
            sim.reset(first.robot_obs, first.scene_obs)
            sim.start_subtask()
            done = False
            for index in segment.frames:
                sim.step(split.frame(index, keys=()).rel_actions)
                if sim.subtask_done(segment.task):
                    done = True
                    break
            solved.append((segment.task, done))
    assert len(solved) == 11 and all(done for _, done in solved), solved


@pytest.mark.ros
def test_recorded_episodes_replayed_through_the_bridge_succeed(launch_node, client, tmp_path):
    """sim_start episodes: each episode's first state and task; the client answers with the recorded action."""
    from deer_ros.ros.client import StandInPolicy

    StandInPolicy(client, status_delay_s=0.0, replay_expert=True)
    report_path = tmp_path / "episodes.json"
    bridge = launch_node("calvin_bridge_node", params={"mode": "sim", "sim_start": "episodes",
                                                        "report_path": str(report_path), "exit_when_done": True})
    client.spin_until(lambda: not bridge.running, 600, "the episodes to finish")
    assert bridge.wait(timeout=5) == 0, bridge.output()[-3000:]
    report = json.loads(report_path.read_text())
    assert report["partial"] is False
    assert report["episodes"]["episodes"] == 3 and report["episodes"]["successes"] == 3, report["runs"]
    assert "episodes solved" in (tmp_path / "episodes.svg").read_text()


@pytest.mark.ros
def test_a_short_chain_with_the_demo_model_writes_a_complete_report(launch_node, client, tmp_path):
    sequences = tmp_path / "one_chain.json"
    sequences.write_text(json.dumps([[STATE, CHAIN]]))
    report_path = tmp_path / "chain.json"
    launch_node("deer_policy_node", params={"use_sim_time": True})
    bridge = launch_node("calvin_bridge_node", params={"mode": "sim", "eval_sequences": str(sequences),
                                                        "report_path": str(report_path), "exit_when_done": True})
    client.spin_until(lambda: not bridge.running, 900, "the chain to finish")
    assert bridge.wait(timeout=5) == 0, bridge.output()[-3000:]
    report = json.loads(report_path.read_text())
    assert report["partial"] is False and report["lh_mtlc"]["chains"] == 1
    chain = report["chains"][0]
    assert chain["complete"] and chain["tasks"] == CHAIN
    assert chain["subtasks"][0]["instruction"] == "pull the handle to open the drawer"
    steps = sum(s["steps"] for s in chain["subtasks"])
    assert report["lh_mtlc"]["steps"] == steps == report["bridge"]["frames_sent"]
    assert report["lh_mtlc"]["mean_gflops"] > 0 and report["lh_mtlc"]["exit_histogram"]
    assert report["bridge"]["unanswered"] == 0


@pytest.mark.ros
def test_a_nan_mid_chain_then_sigint_gives_a_report_complete_as_far_as_it_went(launch_node, client, tmp_path):
    from deer_ros.ros.client import StandInPolicy

    sequences = tmp_path / "two_chains.json"
    sequences.write_text(json.dumps([[STATE, CHAIN]] * 2))
    report_path = tmp_path / "partial.json"
    hold = np.array([0, 0, 0, 0, 0, 0, 1.0])
    policy = StandInPolicy(client, status_delay_s=0.0,
                           answer=lambda n: np.full(7, np.nan) if n == 10 else hold)
    bridge = launch_node("calvin_bridge_node", params={"mode": "sim", "eval_sequences": str(sequences),
                                                        "report_path": str(report_path)})
    client.spin_until(lambda: len(policy.answered) >= 25, 300, "the NaN and a few steps of the next chain")
    assert bridge.stop(signal.SIGINT) == 0
    report = json.loads(report_path.read_text())
    assert report["partial"] is True and "interrupted" in report["reason"]
    first, second = report["chains"]
    assert first["complete"] and first["subtasks"][0]["steps"] == 10
    assert "non-finite" in first["subtasks"][0]["fault"]
    assert not second["complete"]
    assert report["lh_mtlc"]["faults"] == 1 and report["lh_mtlc"]["chains"] == 1


def test_egl_rendering_switch():
    """use_egl loads pybullet's EGL plugin (a GPU's, or Mesa's software EGL on a machine without one)."""
    from deer_ros.calvin.protocol import initial_state_to_obs
    from deer_ros.calvin.sim import CalvinSim

    sim = CalvinSim(VALIDATION, use_egl=True)
    try:
        assert sim.env.use_egl
        obs = sim.reset(*initial_state_to_obs(STATE))
        assert obs.rgb_static.shape == (200, 200, 3) and obs.rgb_static.std() > 10  # a rendered scene, not blank
    finally:
        sim.close()
