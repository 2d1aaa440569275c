"""Reader for CALVIN-format splits (a `training/` or `validation/` folder of a CALVIN dataset).

Layout (CALVIN dataset/README.md, and data/calvin_sample/README.txt):
    episode_XXXXXXX.npz                  one 30 Hz frame each, 7-digit global frame index
    ep_start_end_ids.npy                 int (N, 2): inclusive [start, end] frame ids of each recording
    lang_annotations/auto_lang_ann.npy   optional pickled dict: info.indx [(start, end)], language.ann, language.task

The layout is validated when a split is opened, so a broken dataset fails at once with a message naming the
file and what is wrong. Frames are loaded lazily, one npz per frame; only the keys asked for are decompressed
(`np.load` on an npz is lazy per key).
"""
from __future__ import annotations

import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

log = logging.getLogger(__name__)

IMAGE_KEYS = ("rgb_static", "rgb_gripper")
# Vector keys and their lengths (CALVIN dataset/README.md; calvin_env robot and scene observations).
VECTOR_SIZES = {"rel_actions": 7, "actions": 7, "robot_obs": 15, "scene_obs": 24}
REQUIRED_KEYS = ("rgb_static", "rgb_gripper", "rel_actions")
OPTIONAL_KEYS = ("actions", "robot_obs", "scene_obs")
ALL_KEYS = REQUIRED_KEYS + OPTIONAL_KEYS
EPISODE_IDS_FILE = "ep_start_end_ids.npy"
LANG_FILE = Path("lang_annotations") / "auto_lang_ann.npy"


class CalvinDatasetError(ValueError):
    """A CALVIN split that cannot be read (or a selection that does not match it); the message names the file."""


def frame_filename(index: int) -> str:
    """`episode_0000042.npz` for frame 42 (CALVIN's 7-digit global frame index)."""
    return f"episode_{index:07d}.npz"


@dataclass(frozen=True)
class Segment:
    """A language-annotated stretch of frames (or a whole episode when the split has no annotations)."""

    index: int        # position in the split's segment list (what a selection by index refers to)
    start: int        # first global frame index (inclusive)
    end: int          # last global frame index (inclusive)
    instruction: str  # '' when the split has no annotations
    task: str         # CALVIN task id (e.g. 'open_drawer'), '' when unknown

    def __len__(self) -> int:
        return self.end - self.start + 1

    @property
    def frames(self) -> range:
        """The global frame indices of this segment."""
        return range(self.start, self.end + 1)


@dataclass
class Frame:
    """One CALVIN frame. Optional keys that the file lacks (or that were not asked for) are None."""

    index: int
    rgb_static: np.ndarray            # (H, W, 3) uint8, static camera (200x200 in CALVIN)
    rgb_gripper: np.ndarray           # (h, w, 3) uint8, gripper camera (84x84 in CALVIN)
    rel_actions: np.ndarray           # (7,) float32: scaled delta xyz, delta euler in [-1, 1], gripper +1/-1
    actions: np.ndarray | None = None     # (7,) float64: absolute tcp target xyz (m), euler (rad), gripper
    robot_obs: np.ndarray | None = None   # (15,) float64
    scene_obs: np.ndarray | None = None   # (24,) float64


def check_array(key: str, value: np.ndarray, where: Path, hint: str = "re-export the split") -> np.ndarray:
    """Validate one frame entry against the CALVIN layout; return it in the dtype `Frame` documents.
    Errors name `where` and end with `hint` (what the user should do)."""
    if key in IMAGE_KEYS:
        if value.dtype != np.uint8 or value.ndim != 3 or value.shape[2] != 3 or 0 in value.shape:
            raise CalvinDatasetError(
                f"{where}: '{key}' must be a uint8 (H, W, 3) RGB image, found {value.dtype} {value.shape}; {hint}.")
        return value
    size = VECTOR_SIZES[key]
    if value.shape != (size,) or not np.issubdtype(value.dtype, np.floating):
        raise CalvinDatasetError(
            f"{where}: '{key}' must be a float vector of shape ({size},), found {value.dtype} {value.shape}; {hint}.")
    if not np.all(np.isfinite(value)):
        raise CalvinDatasetError(f"{where}: '{key}' contains NaN or Inf; {hint}.")
    # rel_actions are compared with the policy's float32 output; the rest keep calvin_env's float64 precision.
    return value.astype(np.float32 if key == "rel_actions" else np.float64, copy=False)


def load_frame(path: Path, index: int, keys: Iterable[str] | None = None) -> Frame:
    """Read frame `index` from `path`: the required keys always, the optional ones in `keys` (None = all)."""
    wanted = OPTIONAL_KEYS if keys is None else tuple(k for k in keys if k in OPTIONAL_KEYS)
    unknown = set(keys or ()) - set(ALL_KEYS)
    if unknown:
        raise ValueError(f"unknown frame keys {sorted(unknown)}; known keys: {list(ALL_KEYS)}")
    try:
        npz = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise CalvinDatasetError(f"{path}: frame file is missing; re-copy the split.") from None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise CalvinDatasetError(f"{path}: not a readable npz file ({exc}); re-copy or re-export it.") from exc
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise CalvinDatasetError(f"{path}: holds a single array, not an npz archive of named arrays; re-export it.")
    with npz:
        present = set(npz.files)
        missing = [k for k in REQUIRED_KEYS if k not in present]
        if missing:
            raise CalvinDatasetError(
                f"{path}: missing key(s) {missing} (found {sorted(present)}). A CALVIN frame needs "
                f"{list(REQUIRED_KEYS)}; re-export the split with them.")
        values = {}
        for key in (*REQUIRED_KEYS, *wanted):
            if key in present:
                try:
                    raw = npz[key]  # decompresses this member only
                except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
                    raise CalvinDatasetError(f"{path}: '{key}' cannot be read ({exc}); re-copy the file.") from exc
                values[key] = check_array(key, raw, path)
    return Frame(index=index, **values)


class CalvinSplit:
    """One CALVIN-format split folder, validated on open; frames are read lazily.

    `check_frames=True` opens the first frame of every episode to check keys, shapes and dtypes; every frame is
    checked again when it is read.
    """

    def __init__(self, path: str | os.PathLike, check_frames: bool = True) -> None:
        self.path = Path(path).expanduser()
        self._check_folder()
        self.episodes: list[tuple[int, int]] = self._read_episodes()
        self._frame_ids = self._list_frames()
        self._check_episode_frames()
        self._segments, self.annotated = self._read_segments()
        if check_frames:
            for start, _ in self.episodes:
                self.frame(start)

    # ------------------------------------------------------------------ opening
    def _check_folder(self) -> None:
        if not self.path.is_dir():
            raise CalvinDatasetError(
                f"{self.path}: CALVIN split folder not found. Give a split folder (with episode_XXXXXXX.npz and "
                f"{EPISODE_IDS_FILE}), e.g. <dataset>/validation.")
        if not (self.path / EPISODE_IDS_FILE).exists():
            roots = [s for s in ("training", "validation") if (self.path / s).is_dir()]
            hint = (f" It looks like a dataset root: give {self.path / roots[0]} instead." if roots
                    else " Is this a CALVIN split folder?")
            raise CalvinDatasetError(f"{self.path / EPISODE_IDS_FILE}: file not found.{hint}")

    def _read_episodes(self) -> list[tuple[int, int]]:
        file = self.path / EPISODE_IDS_FILE
        try:
            ids = np.load(file, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise CalvinDatasetError(f"{file}: cannot be read as a .npy array ({exc}); re-copy it.") from exc
        if ids.ndim != 2 or ids.shape[1] != 2 or ids.shape[0] == 0 or not np.issubdtype(ids.dtype, np.integer):
            raise CalvinDatasetError(
                f"{file}: expected a non-empty integer array of shape (N, 2) with inclusive [start, end] frame "
                f"ids, found {ids.dtype} {ids.shape}.")
        episodes = [(int(s), int(e)) for s, e in ids]
        for start, end in episodes:
            if start < 0 or end < start:
                raise CalvinDatasetError(f"{file}: episode [{start}, {end}] is not a valid inclusive frame range.")
        ordered = sorted(episodes)
        for (_, prev_end), (start, end) in zip(ordered, ordered[1:]):
            if start <= prev_end:
                raise CalvinDatasetError(f"{file}: episode [{start}, {end}] overlaps the one ending at {prev_end}.")
        return episodes

    def _list_frames(self) -> set[int]:
        ids = set()
        for name in os.listdir(self.path):  # one directory listing instead of a stat per frame
            if name.startswith("episode_") and name.endswith(".npz") and name[8:-4].isdigit():
                ids.add(int(name[8:-4]))
        return ids

    def _missing_frames(self, start: int, end: int) -> list[int]:
        return [i for i in range(start, end + 1) if i not in self._frame_ids]

    def _check_episode_frames(self) -> None:
        for start, end in self.episodes:
            missing = self._missing_frames(start, end)
            if missing:
                raise CalvinDatasetError(
                    f"{self.path / frame_filename(missing[0])}: missing ({len(missing)} frame file(s) of episode "
                    f"[{start}, {end}] listed in {EPISODE_IDS_FILE} are absent); re-copy the split.")

    def _read_segments(self) -> tuple[list[Segment], bool]:
        file = self.path / LANG_FILE
        if not file.exists():
            log.warning("%s: no language annotations; the segments are the %d episodes, with empty instructions",
                        file, len(self.episodes))
            return [Segment(i, s, e, "", "") for i, (s, e) in enumerate(self.episodes)], False
        try:
            ann = np.load(file, allow_pickle=True).item()
            indx, texts = ann["info"]["indx"], ann["language"]["ann"]
            tasks = ann["language"].get("task", [""] * len(texts))
        except Exception as exc:  # noqa: BLE001 - any failure here means the file is not CALVIN's layout
            raise CalvinDatasetError(
                f"{file}: not a CALVIN annotation file ({type(exc).__name__}: {exc}). Expected a pickled dict "
                "{'info': {'indx': [(start, end), ...]}, 'language': {'ann': [str], 'task': [str]}}.") from exc
        if not (len(indx) == len(texts) == len(tasks)) or len(indx) == 0:
            raise CalvinDatasetError(
                f"{file}: info.indx, language.ann and language.task must be non-empty and of equal length, found "
                f"{len(indx)}, {len(texts)}, {len(tasks)}.")
        segments = []
        for i, (span, text, task) in enumerate(zip(indx, texts, tasks)):
            try:
                start, end = (int(v) for v in span)
            except (TypeError, ValueError):
                raise CalvinDatasetError(f"{file}: info.indx[{i}] = {span!r} is not a (start, end) pair.") from None
            if not isinstance(text, str) or not isinstance(task, str) or end < start:
                raise CalvinDatasetError(
                    f"{file}: annotation {i} is malformed (indx {span!r}, ann {text!r}, task {task!r}).")
            missing = self._missing_frames(start, end)
            if missing:
                raise CalvinDatasetError(
                    f"{file}: annotation {i} ({task or text!r}) covers frames [{start}, {end}] but "
                    f"{frame_filename(missing[0])} and {len(missing) - 1} more are not in the split.")
            segments.append(Segment(i, start, end, text, task))
        return segments, True

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        """Number of frames in the episodes."""
        return sum(end - start + 1 for start, end in self.episodes)

    def __repr__(self) -> str:
        return (f"CalvinSplit({str(self.path)!r}: {len(self.episodes)} episodes, {len(self)} frames, "
                f"{len(self._segments)} {'annotated ' if self.annotated else ''}segments)")

    @property
    def tasks(self) -> list[str]:
        """The distinct task ids of the segments, in order of first appearance."""
        return list(dict.fromkeys(s.task for s in self._segments if s.task))

    def segments(self, select: str | int | Sequence[int | str] | None = None) -> list[Segment]:
        """The segments, or those chosen by `select`: indices and/or task ids, as a list or a comma-separated
        string ('0,2,open_drawer'). None, '' or [] selects all. Order follows `select`; repeats are dropped."""
        if isinstance(select, (int, np.integer)):
            select = [select]
        if select is None or (isinstance(select, str) and not select.strip()) or len(select) == 0:
            return list(self._segments)
        tokens = [t.strip() for t in select.split(",") if t.strip()] if isinstance(select, str) else list(select)
        chosen: dict[int, Segment] = {}
        for token in tokens:
            for segment in self._match(token):
                chosen.setdefault(segment.index, segment)
        return list(chosen.values())

    def select_segments(self, select: str | int | Sequence[int | str] | None = None
                        ) -> list[tuple[int, Segment]]:
        """`segments(select)` as (index, segment) pairs."""
        return [(s.index, s) for s in self.segments(select)]

    def _match(self, token: int | str) -> list[Segment]:
        if isinstance(token, (int, np.integer)) or (isinstance(token, str) and token.isdigit()):
            i = int(token)
            if not 0 <= i < len(self._segments):
                raise CalvinDatasetError(
                    f"segment {i} does not exist: {self.path} has {len(self._segments)} segments "
                    f"(0..{len(self._segments) - 1}).")
            return [self._segments[i]]
        matches = [s for s in self._segments if s.task == token]
        if not matches:
            known = ", ".join(self.tasks) or "none: the split has no task annotations"
            raise CalvinDatasetError(f"no segment of task {token!r} in {self.path} (tasks: {known}).")
        return matches

    def frame(self, index: int, keys: Iterable[str] | None = None) -> Frame:
        """Frame `index` (global frame id). `keys`: optional keys to load as well (None = all present)."""
        return load_frame(self.path / frame_filename(index), index, keys)

    def frames(self, segment: Segment, keys: Iterable[str] | None = None) -> Iterator[Frame]:
        """The frames of `segment`, in order, loaded one at a time."""
        for index in segment.frames:
            yield self.frame(index, keys)


def training_windows(segments: Sequence[Segment], window: int) -> list[tuple[Segment, int]]:
    """(segment, start frame) of every window of `window` consecutive frames that fits inside a segment.

    This is how DeeR/RoboFlamingo sample training data: every start index in each annotated segment such that
    the whole window lies in it (skip_frames=1). Segments shorter than `window` give none.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1 frame, got {window}")
    return [(segment, start) for segment in segments for start in range(segment.start, segment.end - window + 2)]
