"""Recorded segments played through a policy as the node runs them: the one segment loader and the one replay loop.

Every offline consumer (calibration, the offline threshold search, the accuracy-compute curve, the budget and
exit_ratio benchmarks, the timing benchmark's budget runs) reads its data with `load_segments` and steps the
policy with `replay`, so they all see the same thing: the recurrent (LSTM) state reset at the start of each
annotated segment and carried within it, each step deciding its exit with the decider it is given.

`replay` is a generator that yields after each step, before the next one, so a consumer does its per-step work
(an `ExitBudget.record`, reading what a recording decider saw) exactly where the node does it.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import count
from typing import TYPE_CHECKING, Iterable, Iterator, Protocol, Sequence, overload

import numpy as np

from deer_ros.calvin.dataset import CalvinDatasetError, CalvinSplit, Segment
from deer_ros.calvin.evaluation import OpenLoopEvaluator

if TYPE_CHECKING:
    from deer_ros.model.policy import ExitDecider, StepResult


@dataclass(frozen=True)
class ReplayFrame:
    """The two cameras of one recorded frame and the action recorded with it."""
    static: np.ndarray  # (H, W, 3) uint8
    gripper: np.ndarray  # (h, w, 3) uint8
    action: np.ndarray  # (7,) recorded rel_actions (scaled pose deltas, gripper +1/-1)


class _SplitFrames(Sequence[ReplayFrame]):
    """A segment's frames read from the split at each access: replaying a large split keeps one frame in memory."""

    def __init__(self, split: CalvinSplit, segment: Segment, max_frames: int | None) -> None:
        self._split, self._indices = split, segment.frames[:max_frames]

    def __len__(self) -> int:
        return len(self._indices)

    @overload
    def __getitem__(self, i: int) -> ReplayFrame: ...

    @overload
    def __getitem__(self, i: slice) -> Sequence[ReplayFrame]: ...

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self._read(j) for j in self._indices[i]]
        return self._read(self._indices[i])

    def __iter__(self) -> Iterator[ReplayFrame]:
        return (self._read(j) for j in self._indices)

    def _read(self, index: int) -> ReplayFrame:
        f = self._split.frame(index, keys=())  # cameras and rel_actions only
        return ReplayFrame(f.rgb_static, f.rgb_gripper, f.rel_actions)


@dataclass(frozen=True)
class ReplaySegment:
    """One annotated segment: its index in the split, its instruction and its frames in order."""
    index: int
    instruction: str
    frames: Sequence[ReplayFrame]


def load_segments(split: CalvinSplit, select: str | Sequence[int | str] | None = None,
                  max_frames: int | None = None, in_memory: bool = True) -> list[ReplaySegment]:
    """The annotated segments of `split` (any CalvinSplit, e.g. a bag read as one), chosen by `select` (indices
    and/or task ids), at most `max_frames` frames each.

    `in_memory` reads every frame now (for consumers that replay the segments many times); otherwise frames are
    read from the split each time they are replayed. A segment without an instruction is refused: the policy
    needs one.
    """
    segments = []
    for seg in split.segments(select):
        if not seg.instruction:
            raise CalvinDatasetError(f"{split.path}: segment {seg.index} has no instruction (the split has no "
                                     "language annotations); the policy needs one per segment")
        frames: Sequence[ReplayFrame] = _SplitFrames(split, seg, max_frames)
        segments.append(ReplaySegment(seg.index, seg.instruction, list(frames) if in_memory else frames))
    return segments


class Steppable(Protocol):
    """What `replay` drives: a DeerPolicy, or anything with its reset/step."""

    def reset(self) -> None: ...

    def step(self, static_rgb: np.ndarray, gripper_rgb: np.ndarray, instruction: str,
             decide: ExitDecider) -> StepResult: ...


@dataclass(frozen=True)
class Replayed:
    """One step of a replay: where it was and what the policy returned."""
    segment: ReplaySegment
    frame: ReplayFrame
    result: StepResult


def replay(policy: Steppable, segments: Iterable[ReplaySegment], decide: ExitDecider,
           passes: int | None = 1) -> Iterator[Replayed]:
    """Step `policy` over every frame of `segments` with `decide`, the state reset at each segment; `passes` times
    over all of them (None: without end, for consumers that stop after a number of steps)."""
    segments = list(segments)
    for _ in count() if passes is None else range(passes):
        for segment in segments:
            policy.reset()
            for frame in segment.frames:
                yield Replayed(segment, frame, policy.step(frame.static, frame.gripper, segment.instruction, decide))


def open_loop(policy: Steppable, segments: Iterable[ReplaySegment], decide: ExitDecider) -> OpenLoopEvaluator:
    """The policy's actions under `decide` against the recorded ones, with their exits and GFLOPs."""
    evaluator = OpenLoopEvaluator()
    for step in replay(policy, segments, decide):
        r = step.result
        evaluator.add(step.segment.index, r.action, step.frame.action, r.exit_index, r.layers, r.gflops)
    return evaluator
