"""Cheap identities of checkpoints (torch-free), so a calibration can say which model it was made for.

A model folder records the SHA-256 of its weights when it is written (config.json `weights_sha256`), so its
fingerprint costs one small JSON read. A single file gets SHA-256 of its size and 17 evenly spaced 64 KiB
samples: milliseconds for any size, and it changes whenever the file is rewritten with other weights.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from deer_ros.paths import MODEL_CONFIG_FILE

_SAMPLES = 17
_CHUNK = 1 << 16


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a whole file, read in chunks (weights are GBs: done once, when a folder is written)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def checkpoint_fingerprint(checkpoint: str | os.PathLike) -> str:
    """The fingerprint of a model folder (its recorded weights_sha256) or of a checkpoint file (sampled)."""
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        config = path / MODEL_CONFIG_FILE
        try:
            recorded = json.loads(config.read_text()).get("weights_sha256")
        except (OSError, ValueError) as exc:
            raise FileNotFoundError(f"{path} is not a readable model folder ({exc})") from None
        if not recorded:
            raise FileNotFoundError(f"{config} records no weights_sha256: re-write the folder with `deer-ros convert`")
        return recorded
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        for i in range(_SAMPLES):
            f.seek(max(0, (size - _CHUNK) * i // (_SAMPLES - 1)))
            digest.update(f.read(_CHUNK))
    return "sampled:" + digest.hexdigest()
