"""Write frames (from ROS topics, a simulator run or another split) as a CALVIN-format split.

The output is what `CalvinSplit` and CALVIN's own loaders read: episode_XXXXXXX.npz (one frame, compressed, the
sample's keys and dtypes: images uint8, vectors float64), ep_start_end_ids.npy and ep_lens.npy (int64), and
lang_annotations/auto_lang_ann.npy in CALVIN's dict layout when any stretch was annotated.

Safety: every file is written under a temporary name and renamed into place, and the index files are rewritten
after each finished episode, so a crash leaves a readable split of the episodes finished so far (frames of the
unfinished episode are on disk but not listed). `close()` finishes an open episode.

Convention (as in CALVIN): the action stored with frame t is the one taken from the observation of frame t.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from deer_ros.calvin.dataset import (EPISODE_IDS_FILE, LANG_FILE, OPTIONAL_KEYS, CalvinDatasetError, CalvinSplit,
                                     Frame, check_array, frame_filename)
from deer_ros.files import write_atomic

log = logging.getLogger(__name__)
EPISODE_LENGTHS_FILE = "ep_lens.npy"


class CalvinRecorder:
    """Records episodes frame by frame into `out_dir`.

    out_dir must be empty or absent, unless `append=True` and it holds a CALVIN split: then recording continues
    after its last frame, keeping its episodes and annotations. `start_index` is the global index of the first
    frame of a new split (CALVIN's validation split continues the training split's numbering).
    """

    def __init__(self, out_dir: str | os.PathLike, start_index: int = 0, append: bool = False) -> None:
        self.path = Path(out_dir).expanduser()
        self.episodes: list[tuple[int, int]] = []
        self.annotations: list[tuple[int, int, str, str]] = []  # (start, end, instruction, task)
        self._next_index = start_index
        self._episode_start: int | None = None
        self._closed = False
        if start_index < 0:
            raise ValueError(f"start_index must be >= 0, got {start_index}")
        if self.path.exists() and any(self.path.iterdir()):
            if not append:
                raise CalvinDatasetError(f"{self.path}: not empty; record into a new folder, or pass append=True "
                                         "to continue a CALVIN split there.")
            self._resume(CalvinSplit(self.path, check_frames=False))
        self.path.mkdir(parents=True, exist_ok=True)

    def _resume(self, split: CalvinSplit) -> None:
        self.episodes = list(split.episodes)
        if split.annotated:
            self.annotations = [(s.start, s.end, s.instruction, s.task) for s in split.segments()]
        self._next_index = max(end for _, end in self.episodes) + 1

    # ------------------------------------------------------------------ recording
    @property
    def in_episode(self) -> bool:
        return self._episode_start is not None

    def add_frame(self, rgb_static: np.ndarray, rgb_gripper: np.ndarray, rel_actions: np.ndarray,
                  actions: np.ndarray | None = None, robot_obs: np.ndarray | None = None,
                  scene_obs: np.ndarray | None = None) -> int:
        """Append one frame to the current episode (starting one if needed); return its global frame index.

        Images: uint8 (H, W, 3) RGB. rel_actions (7,) in CALVIN's relative convention; optional vectors as in
        `Frame`. Bad shapes, dtypes or non-finite values raise CalvinDatasetError before anything is written.
        """
        if self._closed:
            raise RuntimeError(f"recorder for {self.path} is closed")
        index = self._next_index
        path = self.path / frame_filename(index)
        given = {"rgb_static": rgb_static, "rgb_gripper": rgb_gripper, "rel_actions": rel_actions,
                 "actions": actions, "robot_obs": robot_obs, "scene_obs": scene_obs}
        data = {}
        for key, value in given.items():
            if value is not None:
                value = check_array(key, np.asarray(value), path, hint="the frame was not written")
                data[key] = value if key.startswith("rgb_") else value.astype(np.float64)
        write_atomic(path, lambda f: np.savez_compressed(f, **data))
        if self._episode_start is None:
            self._episode_start = index
        self._next_index += 1
        return index

    def add(self, frame: Frame) -> int:
        """Append a `Frame` (e.g. read from another split); its index is not kept, frames are renumbered."""
        return self.add_frame(frame.rgb_static, frame.rgb_gripper, frame.rel_actions,
                              **{k: getattr(frame, k) for k in OPTIONAL_KEYS})

    def end_episode(self, instruction: str = "", task: str = "") -> tuple[int, int]:
        """Finish the current episode and write the index files. A non-empty `instruction` annotates the whole
        episode with it (and `task`); use `annotate` for parts of an episode. Returns (start, end)."""
        if self._episode_start is None:
            raise RuntimeError("end_episode() without frames: add frames first")
        episode = (self._episode_start, self._next_index - 1)
        self.episodes.append(episode)
        self._episode_start = None
        if instruction:
            self.annotate(*episode, instruction, task)
        else:
            self._write_index()
        return episode

    def annotate(self, start: int, end: int, instruction: str, task: str = "") -> None:
        """Annotate frames [start, end] (inclusive, global indices, inside one finished episode)."""
        if not instruction.strip():
            raise ValueError("an annotation needs a non-empty instruction")
        if not any(s <= start <= end <= e for s, e in self.episodes):
            raise ValueError(f"annotation [{start}, {end}] is not inside one finished episode {self.episodes}")
        self.annotations.append((start, end, instruction, task))
        self._write_index()

    def _write_index(self) -> None:
        ids = np.array(self.episodes, dtype=np.int64).reshape(-1, 2)
        write_atomic(self.path / EPISODE_IDS_FILE, lambda f: np.save(f, ids))
        write_atomic(self.path / EPISODE_LENGTHS_FILE, lambda f: np.save(f, ids[:, 1] - ids[:, 0] + 1))
        if self.annotations:
            ann = {"info": {"episodes": [], "indx": [(s, e) for s, e, _, _ in self.annotations]},
                   "language": {"ann": [a[2] for a in self.annotations], "task": [a[3] for a in self.annotations]}}
            (self.path / LANG_FILE).parent.mkdir(exist_ok=True)
            write_atomic(self.path / LANG_FILE, lambda f: np.save(f, np.array(ann, dtype=object), allow_pickle=True))

    def close(self, instruction: str = "", task: str = "") -> Path:
        """Finish an open episode (annotated with `instruction` if given) and return the split folder."""
        if not self._closed:
            if self.in_episode:
                self.end_episode(instruction, task)
            if not self.episodes:
                log.warning("%s: recorder closed without any episode; nothing was written", self.path)
            self._closed = True
        return self.path

    def __enter__(self) -> CalvinRecorder:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()
