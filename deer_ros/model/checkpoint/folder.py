"""The model folder: one self-contained, relocatable directory per model (as Hugging Face and LeRobot ship
policies), what the node's `checkpoint` parameter and every CLI take.

  <folder>/config.json        {"format": "deer_ros.model", "version": 1, "config": DeerConfig (its tokenizer
                              a path relative to the folder), "built_exits", "weights", "weights_sha256",
                              "calibration" (optional), "source" (what it was converted from)}
  <folder>/model.safetensors  the weights, names as in DeerModel.state_dict() (no pickles)
  <folder>/tokenizer/         the tokenizer files (the tiny word-level one, or GPT-NeoX-20B for of3b/of9b)
  <folder>/calibration.npz    optional: the criterion values the threshold solver uses (exits/calibration.py)
Every path inside is relative to the folder, so it can be copied to a robot and loaded from anywhere.
`weights_sha256` is computed once when the folder is written; it is the checkpoint's fingerprint, so nothing is
hashed at start-up.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deer_ros.model.checkpoint.assemble import Mapped
from deer_ros.model.checkpoint.errors import CheckpointError
from deer_ros.model.checkpoint.own import load_built, unwrap
from deer_ros.model.config import BUNDLED_TOKENIZER, DeerConfig
from deer_ros.model.deer import DeerModel
from deer_ros.model.fingerprint import checkpoint_fingerprint, file_sha256  # noqa: F401 - re-exported
from deer_ros.paths import MODEL_CALIBRATION_FILE as CALIBRATION_FILE
from deer_ros.paths import MODEL_CONFIG_FILE as CONFIG_FILE

FOLDER_FORMAT = "deer_ros.model"
FOLDER_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_DIR = "tokenizer"
# The files a Hugging Face tokenizer folder may hold; only these are copied (a model folder given by mistake
# must not drag its weights along).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.json", "merges.txt", "tokenizer.model", "vocab.txt")


@dataclass(frozen=True)
class ModelFolder:
    """A model folder's description (config.json), with its paths resolved against where the folder is now."""
    path: Path
    info: dict[str, Any]

    @property
    def config(self) -> DeerConfig:
        data = dict(self.info["config"])
        data["tokenizer"] = str(self.path / data["tokenizer"])  # relative in the file, absolute in memory
        return DeerConfig.from_dict(data)

    @property
    def weights(self) -> Path:
        return self.path / self.info["weights"]

    @property
    def calibration(self) -> Path | None:
        name = self.info.get("calibration")
        return self.path / name if name else None

    @property
    def fingerprint(self) -> str:
        return self.info["weights_sha256"]


def is_model_folder(path: str | os.PathLike) -> bool:
    config = Path(path) / CONFIG_FILE
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("format") == FOLDER_FORMAT
    except (OSError, ValueError):
        return False


def open_folder(path: str | os.PathLike) -> ModelFolder:
    """Read and check a model folder's config.json and that the files it names exist."""
    path = Path(path).expanduser().resolve()
    config = path / CONFIG_FILE
    if not config.is_file():
        raise FileNotFoundError(f"{path} is not a deer_ros model folder (no {CONFIG_FILE}); make one with "
                                "`deer-ros convert --out FOLDER ...`")
    try:
        info = json.loads(config.read_text())
    except ValueError as exc:
        raise CheckpointError(str(config), hint=f"is not valid JSON ({exc})") from exc
    if info.get("format") != FOLDER_FORMAT or info.get("version") != FOLDER_VERSION:
        raise CheckpointError(str(config), hint=f"format {info.get('format')!r} version {info.get('version')!r} is "
                                                f"not {FOLDER_FORMAT!r} version {FOLDER_VERSION}")
    folder = ModelFolder(path, info)
    for what, where in (("weights", folder.weights), ("tokenizer", path / info["config"]["tokenizer"]),
                        ("calibration", folder.calibration)):
        if where is not None and not where.exists():
            raise FileNotFoundError(f"model folder {path}: its {what} {where.name} is missing; copy the whole "
                                    "folder, or re-run `deer-ros convert`")
    return folder


def load_folder(path: str | os.PathLike, max_exit: int | None = None) -> tuple[DeerModel, ModelFolder]:
    """The model of a folder (only the layers of exits 1..max_exit built) and the folder's description."""
    from safetensors.torch import load_file

    folder = open_folder(path)
    tensors = Mapped(str(folder.weights), load_file(str(folder.weights)))
    return load_built(folder.config, folder.info.get("built_exits"), tensors, max_exit, str(folder.weights)), folder


def folder_as_own(path: str | os.PathLike) -> dict[str, Any]:
    """A model folder as the dict of our single-file format (own.py), the tokenizer path made absolute."""
    from safetensors.torch import load_file

    from deer_ros.model.checkpoint.own import FORMAT, FORMAT_VERSION

    folder = open_folder(path)
    return {"format": FORMAT, "version": FORMAT_VERSION, "config": folder.config.to_dict(),
            "built_exits": folder.info.get("built_exits"), "model_state_dict": load_file(str(folder.weights))}


def save_folder(model_or_policy: Any, out: str | os.PathLike, *, tokenizer: str | os.PathLike,
                calibration: Any = None, source: dict[str, Any] | None = None) -> ModelFolder:
    """Write a model folder (replacing the files it owns in `out`): weights, tokenizer files, optional calibration.

    tokenizer: a local tokenizer directory or BUNDLED_TOKENIZER; its files are copied into the folder.
    calibration: a deer_ros.exits.calibration.Calibration, or None. It is stamped with this folder's fingerprint.
    """
    from safetensors.torch import save_file

    model = unwrap(model_or_policy)
    out = Path(out).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder: give a new folder for the model")
    if out.is_dir() and any(out.iterdir()) and not is_model_folder(out):
        raise FileExistsError(f"{out} is not empty and not a deer_ros model folder: give a new folder")
    out.mkdir(parents=True, exist_ok=True)
    copy_tokenizer(tokenizer, out / TOKENIZER_DIR)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    weights = out / WEIGHTS_FILE
    save_file(state, str(weights), metadata={"format": FOLDER_FORMAT})
    weights.chmod(0o644)  # safetensors creates it owner-only; a model folder is shared (colcon install, robots)
    config = {**model.config.to_dict(), "tokenizer": TOKENIZER_DIR}
    info = {"format": FOLDER_FORMAT, "version": FOLDER_VERSION, "config": config,
            "built_exits": len(model.exit_layers), "weights": WEIGHTS_FILE, "weights_sha256": file_sha256(weights),
            "source": source or {}}
    (out / CALIBRATION_FILE).unlink(missing_ok=True)
    if calibration is not None:
        calibration.meta.update(checkpoint_fingerprint=info["weights_sha256"])
        calibration.save(out / CALIBRATION_FILE)
        info["calibration"] = CALIBRATION_FILE
    (out / CONFIG_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return open_folder(out)


def copy_tokenizer(source: str | os.PathLike, dest: Path) -> None:
    """Copy a tokenizer's files into `dest` (emptied first)."""
    from deer_ros.model.tokenizer import TINY_TOKENIZER_DIR

    src = TINY_TOKENIZER_DIR if str(source) == BUNDLED_TOKENIZER else Path(source).expanduser()
    if not src.is_dir():
        raise FileNotFoundError(f"tokenizer folder {src} does not exist: pass a local tokenizer folder (for "
                                "of3b/of9b a copy of EleutherAI/gpt-neox-20b's tokenizer files)")
    files = [src / n for n in TOKENIZER_FILES if (src / n).is_file()]
    if not any(f.name in ("tokenizer.json", "vocab.json", "tokenizer.model") for f in files):
        raise FileNotFoundError(f"tokenizer folder {src} holds none of tokenizer.json, vocab.json, tokenizer.model")
    if dest.resolve() == src.resolve():
        return
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for f in files:
        shutil.copy2(f, dest / f.name)
