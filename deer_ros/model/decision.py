"""The exit-decision contract between DeerPolicy and its deciders. Torch-free, so deer_ros.exits can use it.

At every built exit the policy hands a decider an `ExitView` and gets back an `ExitDecision`: whether to stop,
and the criterion value the decider judged by (None when it judged by none, e.g. FixedExit). The policy
collects the values into `StepResult.values`; nothing is written back into the candidate.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class ExitDecision:
    """A decider's answer at one exit."""

    stop: bool
    value: float | None = None  # the criterion value compared with the exit's threshold, if any


STOP = ExitDecision(True)
CONTINUE = ExitDecision(False)


class ExitView(Protocol):
    """What a decider (and an exit criterion) may read at an exit; `policy.ExitCandidate` is the real one."""

    @property
    def index(self) -> int: ...  # 1-based exit index
    @property
    def layers(self) -> int: ...  # LLM layers run so far
    @property
    def pose(self) -> Any: ...  # this exit's pose (tensor or array)
    @property
    def prev_pose(self) -> Any: ...
    @property
    def feature(self) -> Any: ...
    @property
    def prev_feature(self) -> Any: ...
    @property
    def is_last(self) -> bool: ...  # the policy stops here whatever the decider says


class ExitDecider(Protocol):
    """Asked at each built exit, in order, within one step."""

    def __call__(self, candidate: ExitView) -> ExitDecision: ...
