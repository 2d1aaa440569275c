"""Calibration files: every exit's criterion values on a CALVIN split, for the threshold solver.

Two ways to collect them (`mode`), both recording every registered criterion so the node can switch criterion
at run time without re-calibrating, and neither ever writing into the checkpoint (the reference does):
  segments   ours: step the policy over whole annotated segments as the node runs them (state reset at each
             segment, history from the exits actually taken: here the last, as no exit stops early). The right
             choice to predict what the node will spend on data like the calibration data.
  reference  the reference's protocol (deer-reference 2.4; calibration_reference.py): 12-frame windows,
             positions 5..10, a zero LSTM state, a random exit's feature per history step, 10% of the windows,
             random-shift augmentation, seeded; by default on the validation split. The right choice to
             reproduce the paper's exit_ratio settings, and what a released .pth's cached `values` hold.

File format: one `.npz` (no pickles) holding
  values__<criterion>  float64 (n_exits, N)  criterion value of exit k+1 on sample n
  exit_gflops          float64 (n_exits,)    cumulative LLM GFLOPs at each exit, averaged over the prompts
                                             of the samples (ExitInfo.gflops is for a typical prompt; meta keeps it)
  exit_layers          int64   (n_exits,)    LLM layers run when stopping at each exit
  segment              int64   (N,)          index of the segment each sample came from
  meta                 str (JSON)            format, mode, model, checkpoint (+ fingerprint), dataset, split,
                                             frames, created, and `solver` (the counting rule to solve with)
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from deer_ros.calvin.replay import ReplaySegment, load_segments, replay
from deer_ros.exits.criteria import CRITERIA, get_criterion
from deer_ros.exits.solver import OURS, SolverRule
from deer_ros.model.decision import CONTINUE, ExitDecision, ExitView
from deer_ros.model.fingerprint import checkpoint_fingerprint, file_sha256  # noqa: F401 - file_sha256 re-exported
from deer_ros.paths import MODEL_CALIBRATION_FILE, MODEL_CONFIG_FILE

FORMAT = "deer_ros.calibration/1"
_VALUES_PREFIX = "values__"

class CalibrationError(ValueError):
    """A calibration file that cannot be used; the message says what is wrong and how to fix it."""


@dataclass
class Calibration:
    values: dict[str, np.ndarray]  # criterion name -> (n_exits, N) float64
    exit_gflops: np.ndarray  # (n_exits,) float64
    exit_layers: np.ndarray  # (n_exits,) int64
    segment: np.ndarray  # (N,) int64
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.exit_gflops = np.asarray(self.exit_gflops, dtype=np.float64).reshape(-1)
        self.exit_layers = np.asarray(self.exit_layers, dtype=np.int64).reshape(-1)
        self.segment = np.asarray(self.segment, dtype=np.int64).reshape(-1)
        self.values = {name: np.asarray(v, dtype=np.float64) for name, v in self.values.items()}
        self.validate()

    @property
    def n_exits(self) -> int:
        return len(self.exit_gflops)

    @property
    def n_samples(self) -> int:
        return len(self.segment)

    @property
    def criteria(self) -> tuple[str, ...]:
        return tuple(self.values)

    def validate(self, source: str = "calibration") -> None:
        """CalibrationError naming the first inconsistency."""
        n = self.n_exits
        if n < 1 or self.exit_layers.shape != (n,):
            raise CalibrationError(f"{source}: exit_gflops and exit_layers must have one entry per exit, got "
                                   f"{self.exit_gflops.shape} and {self.exit_layers.shape}")
        if not np.all(np.isfinite(self.exit_gflops)) or np.any(self.exit_gflops <= 0) \
                or np.any(np.diff(self.exit_gflops) <= 0):
            raise CalibrationError(f"{source}: exit_gflops must be positive and increasing, got "
                                   f"{self.exit_gflops.tolist()}")
        if np.any(self.exit_layers < 1) or np.any(np.diff(self.exit_layers) <= 0):
            raise CalibrationError(f"{source}: exit_layers must be >= 1 and increasing, got "
                                   f"{self.exit_layers.tolist()}")
        if self.n_samples < 1:
            raise CalibrationError(f"{source}: holds no samples; calibrate on a split with frames")
        if not self.values:
            raise CalibrationError(f"{source}: holds no criterion values")
        for name, v in self.values.items():
            if name not in CRITERIA:
                raise CalibrationError(f"{source}: unknown criterion {name!r} (known: {', '.join(CRITERIA)}); "
                                       "was it written by a newer deer_ros?")
            if v.shape != (n, self.n_samples):
                raise CalibrationError(f"{source}: values of {name!r} have shape {v.shape}, expected "
                                       f"({n}, {self.n_samples}) (exits, samples)")
            if not np.all(np.isfinite(v)) or np.any(v < 0):
                raise CalibrationError(f"{source}: values of {name!r} contain NaN, Inf or negative numbers; "
                                       "re-run the calibration")

    def criterion_values(self, criterion: str) -> np.ndarray:
        """(n_exits, N) values of `criterion`; CalibrationError if the file does not hold it."""
        get_criterion(criterion)  # unknown names get the registry's message
        if criterion not in self.values:
            raise CalibrationError(f"the calibration holds no values for criterion {criterion!r} (it has: "
                                   f"{', '.join(self.values)}); re-run `deer-ros calibrate --criterion {criterion}`")
        return self.values[criterion]

    def for_exits(self, exit_layers: Sequence[int]) -> "Calibration":
        """This calibration restricted to a model's built exits (given by their layer counts).

        A model built with fewer layers (max_exit / memory budget) has a prefix of the calibrated exits; any
        other difference means the calibration belongs to another model and CalibrationError is raised.
        """
        layers = [int(x) for x in exit_layers]
        n = len(layers)
        if n == 0 or n > self.n_exits or self.exit_layers[:n].tolist() != layers:
            raise CalibrationError(
                f"calibration exits (layers {self.exit_layers.tolist()}, model {self.meta.get('model', '?')}) do not "
                f"match the model's exits (layers {layers}); calibrate this model with `deer-ros calibrate`")
        if n == self.n_exits:
            return self
        return Calibration({k: v[:n] for k, v in self.values.items()}, self.exit_gflops[:n], self.exit_layers[:n],
                           self.segment, dict(self.meta))

    @property
    def solver_rule(self) -> SolverRule:
        """The counting rule recorded with the values (reference-mode files: the reference's), else ours."""
        rule = self.meta.get("solver")
        return SolverRule(**rule) if rule else OURS

    def checkpoint_mismatch(self, checkpoint: str | os.PathLike) -> str | None:
        """A warning when this calibration was made for another checkpoint, else None (also when it records no
        fingerprint). Cheap: a model folder's recorded fingerprint, or a sampled hash of a single file."""
        recorded = self.meta.get("checkpoint_fingerprint")
        if not recorded:
            return None
        actual = checkpoint_fingerprint(checkpoint)
        if actual == recorded:
            return None
        made_for, found = recorded.removeprefix("sampled:")[:12], actual.removeprefix("sampled:")[:12]
        return (f"the calibration was made for checkpoint {self.meta.get('checkpoint', '?')} (fingerprint "
                f"{made_for}), not {checkpoint} ({found}): "
                "its thresholds may miss the budget; re-run `deer-ros calibrate` for this checkpoint")

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike) -> Path:
        """Write the .npz (parents created); returns the path written."""
        path = Path(path).expanduser()
        if path.suffix != ".npz":
            raise CalibrationError(f"{path}: calibration files are .npz; give a path ending in .npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"format": FORMAT, **self.meta}
        arrays = {f"{_VALUES_PREFIX}{k}": v for k, v in self.values.items()}
        np.savez_compressed(path, exit_gflops=self.exit_gflops, exit_layers=self.exit_layers, segment=self.segment,
                            meta=np.array(json.dumps(meta)), **arrays)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Calibration":
        """Read and validate a calibration file; CalibrationError saying what is wrong otherwise."""
        path = Path(path).expanduser()
        try:
            with np.load(path, allow_pickle=False) as npz:
                data = {k: npz[k] for k in npz.files}
        except FileNotFoundError:
            raise CalibrationError(f"{path}: calibration file not found; create one with `deer-ros calibrate`") \
                from None
        except (OSError, ValueError, EOFError) as exc:
            raise CalibrationError(f"{path}: not a readable .npz calibration file ({exc})") from exc
        if not isinstance(data, dict) or "meta" not in data:
            raise CalibrationError(f"{path}: not a deer_ros calibration file (no 'meta' entry); "
                                   "create one with `deer-ros calibrate`")
        try:
            meta = json.loads(str(data.pop("meta")))
        except json.JSONDecodeError as exc:
            raise CalibrationError(f"{path}: 'meta' is not valid JSON ({exc})") from exc
        if meta.get("format") != FORMAT:
            raise CalibrationError(f"{path}: format {meta.get('format')!r} is not {FORMAT!r}; re-run the calibration")
        missing = [k for k in ("exit_gflops", "exit_layers", "segment") if k not in data]
        if missing:
            raise CalibrationError(f"{path}: missing arrays {missing}; re-run the calibration")
        values = {k[len(_VALUES_PREFIX):]: v for k, v in data.items() if k.startswith(_VALUES_PREFIX)}
        try:
            return cls(values, data["exit_gflops"], data["exit_layers"], data["segment"], meta)
        except CalibrationError as exc:
            raise CalibrationError(f"{path}: {exc}") from None


def calibration_meta(model: str, checkpoint: Path, split: Any = None, select: str = "", device: str = "cpu",
                     dtype: str = "fp32") -> dict[str, Any]:
    """What a calibration file records about what produced it: model preset, checkpoint and its fingerprint,
    segment selection, device and dtype, and (given a split) the dataset and split."""
    meta = {"model": model, "checkpoint": str(checkpoint.resolve()),
            "checkpoint_fingerprint": checkpoint_fingerprint(checkpoint), "select": select, "device": device,
            "dtype": dtype}
    if split is not None:
        meta.update(dataset=str(split.path.resolve()), split=split.path.name)
    return meta


def split_segments(split: Any, select: str | Sequence[int | str] | None = None,
                   max_frames: int | None = None) -> list[ReplaySegment]:
    """The calibration input of a `CalvinSplit` (or a bag read as one): its annotated segments, `select` picks
    them (indices / task ids), `max_frames` caps the frames per segment; frames are read as they are replayed."""
    return load_segments(split, select, max_frames, in_memory=False)


class _RecordAll:
    """Decider that never stops early and records every criterion's value at every examined exit."""

    def __init__(self, criteria: Sequence[str]) -> None:
        self.criteria = {name: get_criterion(name) for name in criteria}
        self.rows: list[list[float]] = []  # per examined exit of the current step: one value per criterion

    def __call__(self, candidate: ExitView) -> ExitDecision:
        self.rows.append([fn(candidate) for fn in self.criteria.values()])
        return CONTINUE  # the policy still stops at the last allowed exit

    def take(self) -> list[list[float]]:
        rows, self.rows = self.rows, []
        return rows


def collect_calibration(policy: Any, segments: Iterable[ReplaySegment], criteria: Sequence[str] | None = None,
                        meta: dict[str, Any] | None = None) -> Calibration:
    """Replay `policy` (a DeerPolicy) over `segments`, examining every exit; return the values of `criteria`.

    `segments` come from `split_segments` / `deer_ros.calvin.replay.load_segments`. `meta` (model, checkpoint,
    dataset, split, ...) is stored with the values; the frame count and date are added.
    """
    names = list(criteria or CRITERIA)
    exits = list(policy.exits)
    columns: list[np.ndarray] = []  # per sample: (n_exits, n_criteria)
    segment_of: list[int] = []
    last_gflops: list[float] = []  # per sample: GFLOPs of the last exit at its actual prompt length
    recorder = _RecordAll(names)
    for step in replay(policy, segments, recorder):
        rows = recorder.take()
        if len(rows) != len(exits):
            raise RuntimeError(f"the policy examined {len(rows)} exits, expected all {len(exits)}: "
                               "calibration needs a decider call at every built exit")
        columns.append(np.asarray(rows, dtype=np.float64))
        segment_of.append(int(step.segment.index))
        last_gflops.append(float(step.result.gflops))
    if not columns:
        raise CalibrationError("no frames to calibrate on: the selected segments are empty")
    stacked = np.stack(columns, axis=-1)  # (n_exits, n_criteria, N)
    nominal = np.array([e.gflops for e in exits], dtype=np.float64)
    # Every exit's cost scales with the prompt length like the last one's (exact when all layers have the same
    # structure, as in DeeR-3B), so the mean actual cost of exit k is its nominal cost times the mean ratio.
    measured = nominal * float(np.mean(last_gflops)) / nominal[-1]
    info = {"mode": "segments", **(meta or {}), "frames": len(columns), "segments": len(set(segment_of)),
            "exit_gflops_nominal": nominal.tolist(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    return Calibration({name: stacked[:, i] for i, name in enumerate(names)},
                       measured, [e.layers for e in exits], segment_of, info)


def calibration_for(checkpoint: str | os.PathLike,
                    calibration: str | os.PathLike = "") -> tuple[Calibration | None, str]:
    """The calibration a node should use for `checkpoint`, and a warning ('' when none).

    `calibration` '' means the one inside the model folder (the bundled demo model's when `checkpoint` is '' too);
    None when there is none. The warning says when the calibration was made for another checkpoint (compared by
    fingerprint: a small JSON read for a folder, a sampled hash for a file; never the whole weights).
    """
    from deer_ros.paths import demo_checkpoint

    model = Path(checkpoint).expanduser() if str(checkpoint) else demo_checkpoint()
    path = Path(calibration).expanduser() if str(calibration) else _folder_calibration(model)
    if path is None:
        return None, ""
    loaded = Calibration.load(path)
    try:
        warning = loaded.checkpoint_mismatch(model) if model.exists() else None
    except (OSError, ValueError) as exc:
        warning = f"cannot tell which checkpoint the calibration {path} was made for ({exc})"
    return loaded, warning or ""


def _folder_calibration(model: Path) -> Path | None:
    """A model folder's calibration: the one its config.json names, else a calibration.npz put beside it."""
    try:
        name = json.loads((model / MODEL_CONFIG_FILE).read_text()).get("calibration") or MODEL_CALIBRATION_FILE
    except (OSError, ValueError):
        return None
    return model / name if (model / name).is_file() else None
