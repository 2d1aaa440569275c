"""Fixtures for the training tests: a small CALVIN split cut from the real sample, the tiny model's inputs."""
from __future__ import annotations

from pathlib import Path

import pytest

from deer_ros.calvin.dataset import CalvinSplit
from deer_ros.calvin.recorder import CalvinRecorder

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "calvin_sample"
SMALL_FRAMES = 10  # frames kept from each of the first two training episodes


@pytest.fixture(scope="session")
def sample_training() -> CalvinSplit:
    if not (SAMPLE / "training").is_dir():
        pytest.fail(f"the real CALVIN sample is missing at {SAMPLE}; copy it there (see README)")
    return CalvinSplit(SAMPLE / "training", check_frames=False)


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory, sample_training) -> Path:
    """A dataset root whose training split holds the first 10 real frames of two annotated episodes."""
    root = tmp_path_factory.mktemp("small_calvin")
    with CalvinRecorder(root / "training") as rec:
        for seg in sample_training.segments()[:2]:
            for index in list(seg.frames)[:SMALL_FRAMES]:
                rec.add(sample_training.frame(index))
            rec.end_episode(seg.instruction, seg.task)
    return root


@pytest.fixture(scope="session")
def tiny_inputs():
    """(config with aux heads, image preprocessor, prompt encoder) of the tiny preset."""
    from deer_ros.model.config import DeerConfig
    from deer_ros.model.preprocess import ImagePreprocessor
    from deer_ros.model.tokenizer import PromptEncoder, load_tokenizer

    config = DeerConfig.preset("tiny", aux_heads=True)
    prompts = PromptEncoder(load_tokenizer(config.tokenizer), config.max_text_tokens, config.vocab_size)
    return config, ImagePreprocessor(config.image_size), prompts


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """One intra-op thread: on a busy 2-core machine a second thread mostly spin-waits and doubles CPU use."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
