"""FAKES of calvin_env's PlayTableSimEnv and task oracle, for unit tests only.

calvin_env (the real CALVIN simulator) cannot be installed on the development and CI machines: it is not on
PyPI and comes from a source checkout with a submodule. These fakes stand in for that boundary so the
adapter's and the protocol's own logic can be tested. They copy the parts of calvin_env's contract the
adapter relies on - a relative 7-vector action moves the target by a[:3] * 0.02 m and a[3:6] * 0.05 rad and is
scaled in place, the gripper must be exactly +1 or -1, `reset(robot_obs, scene_obs)`, `get_obs()`, `get_info()`,
`step() -> (obs, 0, False, info)`, `Tasks.get_task_info_for_set(start_info, end_info, tasks)` - and nothing
else: no physics, no rendering. They say nothing about how well a policy does in CALVIN.
"""
from __future__ import annotations

import numpy as np

MAX_REL_POS = 0.02
MAX_REL_ORN = 0.05


class FakeCalvinEnv:
    """Fake PlayTableSimEnv: the tool centre point follows the relative actions exactly."""

    def __init__(self) -> None:
        self.tcp = np.zeros(6)           # xyz, euler
        self.gripper_action = 1
        self.scene_obs = np.zeros(24)
        self.received: list[np.ndarray] = []  # the actions exactly as passed to step()
        self.resets = 0
        self.closed = False

    def reset(self, robot_obs=None, scene_obs=None):
        # Like calvin_env's Robot.reset: the pose comes from robot_obs, the gripper command does not (the last
        # command stays in force until the next step; robot_obs[14] is ignored).
        self.tcp = np.array(robot_obs[:6], dtype=np.float64)
        self.scene_obs = np.array(scene_obs, dtype=np.float64)
        self.resets += 1
        return self.get_obs()

    def step(self, action):
        self.received.append(np.array(action))
        assert len(action) == 7
        rel_pos, rel_orn, gripper = np.split(action, [3, 6])  # views: scaled in place, as calvin_env does
        rel_pos *= MAX_REL_POS
        rel_orn *= MAX_REL_ORN
        assert gripper[0] in (-1, 1), f"calvin_env asserts the gripper is -1 or 1, got {gripper[0]}"
        self.tcp[:3] += rel_pos
        self.tcp[3:] += rel_orn
        self.gripper_action = int(gripper[0])
        return self.get_obs(), 0, False, self.get_info()

    def robot_obs(self) -> np.ndarray:
        obs = np.zeros(15)
        obs[:6] = self.tcp
        obs[14] = self.gripper_action
        return obs

    def get_obs(self) -> dict:
        # Images encode the tcp x position (in mm) so tests can tell frames apart.
        level = int(np.clip(round(self.tcp[0] * 1000) + 100, 0, 255))
        return {"rgb_obs": {"rgb_static": np.full((8, 8, 3), level, np.uint8),
                            "rgb_gripper": np.full((4, 4, 3), level, np.uint8)},
                "depth_obs": {}, "robot_obs": self.robot_obs(), "scene_obs": self.scene_obs.copy()}

    def get_info(self) -> dict:
        return {"robot_info": {"tcp_pos": self.tcp[:3].copy(), "gripper_action": self.gripper_action},
                "scene_info": {}}

    def close(self) -> None:
        self.closed = True


class FakeTaskOracle:
    """Fake calvin_env Tasks: a task counts as done when the tcp moved more than `distance` metres along +x
    since the subtask's start info (real CALVIN tasks look at the scene; the adapter only passes infos on)."""

    def __init__(self, distance: float = 0.09) -> None:
        self.distance = distance
        self.calls = 0

    def get_task_info_for_set(self, start_info: dict, end_info: dict, task_filter: set) -> set:
        self.calls += 1
        moved = end_info["robot_info"]["tcp_pos"][0] - start_info["robot_info"]["tcp_pos"][0]
        return set(task_filter) if moved > self.distance else set()
