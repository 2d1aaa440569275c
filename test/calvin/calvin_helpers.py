"""Helpers shared by the CALVIN tests (importable from test modules, unlike conftest)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from deer_ros.calvin.dataset import LANG_FILE

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "calvin_sample"
# Two short episodes cut from the real sample's training split: frames 0-9 (turn_on_led) and 48-57 (open_drawer).
SMALL_EPISODES = [(0, 9), (48, 57)]


def write_annotations(split: Path, spans, texts, tasks) -> None:
    """Write lang_annotations/auto_lang_ann.npy in CALVIN's dict layout."""
    (split / LANG_FILE).parent.mkdir(parents=True, exist_ok=True)
    ann = {"info": {"episodes": [], "indx": list(spans)}, "language": {"ann": list(texts), "task": list(tasks)}}
    np.save(split / LANG_FILE, ann, allow_pickle=True)
