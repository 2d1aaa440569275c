"""Fixtures for the bag tests. rosbags and rerun-sdk come with the `bag`/`viz` extras (in `dev`); each test module
skips with the install command when its extra is missing."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RERUN_ANALYTICS", "false")  # the rerun CLI the tests run sends no usage data

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "calvin_sample"


@pytest.fixture(scope="session")
def validation() -> Path:
    return SAMPLE / "validation"


@pytest.fixture(scope="session")
def one_segment_bag(tmp_path_factory, validation) -> Path:
    """The first validation segment (45 frames) as a bag, written once per session (read-only for tests)."""
    from deer_ros.bag.convert import split_to_bag

    return split_to_bag(validation, tmp_path_factory.mktemp("bags") / "segment0", select="0")
