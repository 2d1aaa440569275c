"""Fixtures for the model tests: the tiny preset with non-zero cross-attention gates and real CALVIN frames."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from deer_ros.model.config import DeerConfig
from model_fixtures import tiny_model

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "calvin_sample"


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """The tiny model's ops are far too small to gain from intra-op threads, and on a shared 2-core machine
    spinning OpenMP threads make them 10-100x slower; one thread keeps these tests fast and their timing stable."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_config() -> DeerConfig:
    return DeerConfig.preset("tiny")


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from deer_ros.model.tokenizer import load_tokenizer

    return load_tokenizer("bundled:tiny")


@pytest.fixture
def model():
    return tiny_model()


@pytest.fixture(scope="session")
def frames() -> list[tuple[np.ndarray, np.ndarray]]:
    """(static, gripper) uint8 pairs of consecutive real CALVIN frames from the bundled sample."""
    files = sorted((SAMPLE / "training").glob("episode_*.npz"))[:8]
    assert files, f"the CALVIN sample is missing under {SAMPLE}"
    out = []
    for f in files:
        with np.load(f) as d:
            out.append((d["rgb_static"], d["rgb_gripper"]))
    return out
