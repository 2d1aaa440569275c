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

from deer_ros.calvin.protocol import InvalidAction, SimObservation

CALVIN_ENV_INSTALL = """calvin_env is not installed (it is not on PyPI). Install it from source into this environment
(docs/calvin.md; tested with calvin_env 797142c, pybullet 3.2.7, numpy 2):
    git clone https://github.com/mees/calvin_env.git    # the tacto submodule is not needed
    pip install pybullet==3.2.7 gym hydra-core omegaconf numpy-quaternion scipy opencv-python-headless gitpython
    pip install --no-deps -e calvin_env
Do not install tacto (the tactile sensor): its urdfpy pins networkx 2.2, which does not import on Python >= 3.10.
The RGB cameras do not need it; the bridge drops a tactile camera from the split's config."""
RGB_CAMERAS = ("static", "gripper")  # the cameras the bridge publishes; others (tactile: needs tacto) are dropped
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

    The six pose values are clipped to [-1, 1] (the policy's range; calvin_env does not clip, so CALVIN passes
    larger values through; the protocol counts every clipped step and the report shows the count), the gripper
    becomes +1 (open) when positive and -1 (close) otherwise. Non-finite or misshapen actions raise InvalidAction:
    they must never reach a robot.
    """
    try:
        a = np.asarray(action, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise InvalidAction(f"not a numeric action: {action!r}") from exc
    if a.shape != (7,):
        raise InvalidAction(f"a CALVIN action has 7 values (xyz, euler, gripper), got shape {np.shape(action)}")
    if not np.all(np.isfinite(a)):
        raise InvalidAction(f"refusing a non-finite action: {a.tolist()}")
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


def make_env(split_dir: Path, use_egl: bool = False, show_gui: bool = False) -> Any:
    """calvin_env's PlayTableSimEnv for a CALVIN split, as calvin_env's get_env() builds it, with two changes:
    only the RGB cameras are kept (a dataset rendered with a tactile sensor would need tacto), and EGL rendering
    is chosen here instead of by the split's config."""
    require_calvin_env()
    import hydra
    from omegaconf import OmegaConf

    config = split_dir / ".hydra" / "merged_config.yaml"
    if not config.is_file():
        raise FileNotFoundError(f"{config}: not found; calvin_env builds the simulator from a CALVIN split's "
                                ".hydra/merged_config.yaml (give e.g. <dataset>/validation)")
    conf = OmegaConf.load(config)
    missing = [name for name in RGB_CAMERAS if name not in conf.cameras]
    if missing:
        raise FileNotFoundError(f"{config}: no {' and no '.join(missing)} camera; the bridge publishes the static "
                                "and the gripper camera")
    for name in [name for name in conf.cameras if name not in RGB_CAMERAS]:
        del conf.cameras[name]
    conf.env.use_egl = bool(use_egl)
    return hydra.utils.instantiate(conf.env, show_gui=show_gui, use_vr=False, use_scene_info=True)


class CalvinSim:
    """The CALVIN simulator as `deer_ros.calvin.protocol.SubtaskEnv`.

    `dataset_split_dir`: a CALVIN split with .hydra/merged_config.yaml (e.g. <dataset>/validation), from which
    calvin_env builds the same scene, robot and cameras. `env` and `task_oracle` replace the real calvin_env
    objects (tests use fakes; a caller may pass an env it built itself).
    """

    def __init__(self, dataset_split_dir: str | os.PathLike, env: Any = None, task_oracle: Any = None,
                 show_gui: bool = False, tasks_yaml: str | os.PathLike | None = None, use_egl: bool = False) -> None:
        self.split_dir = Path(dataset_split_dir).expanduser()
        self.oracle = task_oracle if task_oracle is not None else load_task_oracle(tasks_yaml)
        self.env = env if env is not None else make_env(self.split_dir, use_egl=use_egl, show_gui=show_gui)
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
        """Disconnect the simulator (idempotent)."""
        if self.env is not None:
            self.env.close()
            if hasattr(self.env, "cid"):
                self.env.cid = -1  # calvin_env's __del__ closes again, and pybullet raises on a second disconnect
            self.env = None
