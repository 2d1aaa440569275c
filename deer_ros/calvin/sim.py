"""Adapter to the real CALVIN simulator (calvin_env), imported lazily.

calvin_env is not on PyPI: it is installed from a clone of github.com/mees/calvin_env (see CALVIN_ENV_INSTALL).
Without it everything else in deer_ros.calvin works; `CalvinSim` then raises `CalvinEnvMissing` with the install
steps. The adapter's own logic (action conversion, step counting, the task oracle check) is tested with a fake
environment object in test/calvin/.

Facts of calvin_env this relies on (calvin_env robot/robot.py, envs/play_table_env.py, envs/tasks.py):
- `step(a)` with a plain 7-vector is a relative action: target += a[:3] * 0.02 m, euler += a[3:6] * 0.05 rad,
  with no clipping of its own; the gripper must be exactly +1 (open) or -1 (close). It scales the array in
  place, so it gets a copy. Returns (obs, 0, False, info).
- `reset(robot_obs, scene_obs)` sets the whole state; `get_obs()` -> {'rgb_obs': {'rgb_static', 'rgb_gripper',
  ...}, 'robot_obs', 'scene_obs', ...}; `get_info()` is what the task oracle compares.
- Task oracle: `Tasks.get_task_info_for_set(start_info, end_info, {task})` is non-empty when `task` was done.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from deer_ros.calvin.protocol import SimObservation

CALVIN_ENV_INSTALL = """calvin_env is not installed (it is not on PyPI). Install it from source into this environment:
    git clone --recursive https://github.com/mees/calvin_env.git   # --recursive also fetches the tacto submodule
    pip install -e calvin_env/tacto
    pip install -e calvin_env
It needs pybullet, hydra-core, omegaconf, gym, numpy-quaternion and scipy (see calvin_env's setup). Render
with EGL on a GPU machine for textures that match the CALVIN data (the split's .hydra/merged_config.yaml sets
use_egl)."""
TASKS_YAML = Path("conf") / "tasks" / "new_playtable_tasks.yaml"  # inside the calvin_env checkout


class CalvinEnvMissing(ImportError):
    """calvin_env cannot be imported; the message says how to install it."""


def require_calvin_env():
    """The calvin_env module, or CalvinEnvMissing with install instructions."""
    try:
        import calvin_env
    except ImportError as exc:
        raise CalvinEnvMissing(f"{CALVIN_ENV_INSTALL}\n(import error: {exc})") from exc
    return calvin_env


def to_env_action(action) -> np.ndarray:
    """A policy action -> the (7,) float64 relative action calvin_env accepts.

    The six pose values are clipped to [-1, 1] (the policy's range; calvin_env does not clip), the gripper becomes
    +1 (open) when positive and -1 (close) otherwise. Non-finite actions are refused: they must never reach a robot.
    """
    a = np.asarray(action, dtype=np.float64).reshape(-1)
    if a.shape != (7,):
        raise ValueError(f"a CALVIN action has 7 values (xyz, euler, gripper), got shape {np.shape(action)}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"refusing a non-finite action: {a.tolist()}")
    out = np.empty(7)
    out[:6] = np.clip(a[:6], -1.0, 1.0)
    out[6] = 1.0 if a[6] > 0 else -1.0
    return out


def load_task_oracle(tasks_yaml: str | os.PathLike | None = None) -> Any:
    """CALVIN's task oracle (calvin_env.envs.tasks.Tasks) from `tasks_yaml`, by default the calvin_env
    checkout's conf/tasks/new_playtable_tasks.yaml (the same definitions as calvin_models' rollout tasks)."""
    calvin_env = require_calvin_env()
    import hydra
    from omegaconf import OmegaConf

    path = Path(tasks_yaml) if tasks_yaml else Path(calvin_env.__file__).resolve().parents[1] / TASKS_YAML
    if not path.is_file():
        raise FileNotFoundError(f"{path}: task definitions not found; pass tasks_yaml= (calvin_env's "
                                f"{TASKS_YAML} or calvin_models/conf/callbacks/rollout/tasks/new_playtable_tasks.yaml)")
    return hydra.utils.instantiate(OmegaConf.load(path))


def observation(obs: dict) -> SimObservation:
    """calvin_env's observation dict -> SimObservation."""
    rgb = obs["rgb_obs"]
    return SimObservation(rgb_static=np.asarray(rgb["rgb_static"], dtype=np.uint8),
                          rgb_gripper=np.asarray(rgb["rgb_gripper"], dtype=np.uint8),
                          robot_obs=np.asarray(obs["robot_obs"], dtype=np.float64),
                          scene_obs=np.asarray(obs["scene_obs"], dtype=np.float64))


class CalvinSim:
    """The CALVIN simulator as `deer_ros.calvin.protocol.SubtaskEnv`.

    `dataset_split_dir`: a CALVIN split with .hydra/merged_config.yaml (e.g. <dataset>/validation), from which
    calvin_env builds the same scene, robot and cameras. `env` and `task_oracle` replace the real calvin_env
    objects (tests use fakes; a caller may pass an env it built itself).
    """

    def __init__(self, dataset_split_dir: str | os.PathLike, env: Any = None, task_oracle: Any = None,
                 show_gui: bool = False, tasks_yaml: str | os.PathLike | None = None) -> None:
        self.split_dir = Path(dataset_split_dir).expanduser()
        if env is None:
            require_calvin_env()
            config = self.split_dir / ".hydra" / "merged_config.yaml"
            if not config.is_file():
                raise FileNotFoundError(f"{config}: not found; calvin_env builds the simulator from a CALVIN "
                                        "split's .hydra/merged_config.yaml (give e.g. <dataset>/validation)")
            from calvin_env.envs.play_table_env import get_env

            env = get_env(self.split_dir, show_gui=show_gui)
        self.env = env
        self.oracle = task_oracle if task_oracle is not None else load_task_oracle(tasks_yaml)
        self.steps = 0  # env steps since construction
        self._start_info: dict | None = None
        self._info: dict | None = None

    def reset(self, robot_obs: np.ndarray, scene_obs: np.ndarray) -> SimObservation:
        """Set the full robot and scene state; return the observation there."""
        self.env.reset(robot_obs=np.asarray(robot_obs, dtype=np.float64),
                       scene_obs=np.asarray(scene_obs, dtype=np.float64))
        self._start_info = self._info = None
        return self.observe()

    def observe(self) -> SimObservation:
        return observation(self.env.get_obs())

    def start_subtask(self) -> None:
        """Remember the current state: the oracle judges a subtask against it."""
        self._start_info = self._info = self.env.get_info()

    def step(self, action) -> tuple[SimObservation, np.ndarray]:
        """Apply one policy action (converted by `to_env_action`); return (observation, action applied)."""
        applied = to_env_action(action)
        obs, _, _, info = self.env.step(applied.copy())  # calvin_env scales the array it gets in place
        self._info = info
        self.steps += 1
        return observation(obs), applied

    def subtask_done(self, task: str) -> bool:
        """Whether CALVIN's oracle sees `task` done between `start_subtask()` and now."""
        if self._start_info is None:
            raise RuntimeError("subtask_done() before start_subtask()")
        return len(self.oracle.get_task_info_for_set(self._start_info, self._info, {task})) > 0

    def close(self) -> None:
        self.env.close()
