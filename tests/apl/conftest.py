"""Fixtures for the training-engine tests: tiny models and synthetic datasets.

Tests run on 2 shared CPU cores, so torch uses at most 2 threads and the expensive
fixtures (the tiny BERT directory, the datasets) are built once per session.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.apl.synthetic import write_image_dataset, write_text_dataset, write_tiny_bert

torch.set_num_threads(min(2, torch.get_num_threads()))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `@pytest.mark.gpu` tests cleanly where CUDA is not available."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_bert(tiny_bert_dir: Path) -> str:
    """The base-model name of the tiny BERT (an `hf:` local directory)."""
    return f"hf:{tiny_bert_dir}"


@pytest.fixture(scope="session")
def text_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_text_dataset(tmp_path_factory.mktemp("text-data"), n=48)


@pytest.fixture(scope="session")
def large_text_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_text_dataset(tmp_path_factory.mktemp("text-data-96"), n=96)


@pytest.fixture(scope="session")
def image_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_image_dataset(tmp_path_factory.mktemp("image-data"), n=40, size=32)


#: A small timm network that learns the synthetic image data in a few epochs at 32 px.
TINY_IMAGE_MODEL = "timm:resnet10t"
