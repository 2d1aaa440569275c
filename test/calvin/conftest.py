"""Fixtures for the CALVIN tests: the real sample, and small copies of it in tmp_path to break on purpose."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from calvin_helpers import SAMPLE, SMALL_EPISODES, write_annotations

from deer_ros.calvin.dataset import EPISODE_IDS_FILE, frame_filename


@pytest.fixture(scope="session")
def sample_root() -> Path:
    if not (SAMPLE / "training" / EPISODE_IDS_FILE).exists():
        pytest.fail(f"the real CALVIN sample is missing at {SAMPLE}; copy it there (see README)")
    return SAMPLE


@pytest.fixture
def small_split(sample_root, tmp_path) -> Path:
    """A writable 2-episode, 20-frame CALVIN split made of real sample frames, annotated per episode."""
    split = tmp_path / "small" / "training"
    split.mkdir(parents=True)
    for start, end in SMALL_EPISODES:
        for i in range(start, end + 1):
            shutil.copyfile(sample_root / "training" / frame_filename(i), split / frame_filename(i))
    np.save(split / EPISODE_IDS_FILE, np.array(SMALL_EPISODES, dtype=np.int64))
    write_annotations(split, SMALL_EPISODES, ["push down the button to turn on the led", "pull the drawer"],
                      ["turn_on_led", "open_drawer"])
    return split
