"""Training on CUDA with mixed precision (skipped where no CUDA device is present)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from apl.artifacts import publish_result
from apl.inference import Predictor, load
from apl.spec import Hyperparameters
from apl.training import TrainConfig, train
from tests.apl.conftest import TINY_IMAGE_MODEL


@pytest.mark.gpu
@pytest.mark.parametrize("mixed_precision", ["auto", "fp16"])
def test_cuda_training_with_mixed_precision(
    image_dataset: Path, tmp_path: Path, mixed_precision: str
) -> None:
    hp = Hyperparameters(
        epochs=6, batch_size=8, learning_rate=3e-3, image_size=32, mixed_precision=mixed_precision
    )
    checkpoint = tmp_path / "last.ckpt"
    result = train(
        TrainConfig(
            image_dataset, TINY_IMAGE_MODEL, hyperparameters=hp, device="auto", checkpoint_path=checkpoint
        )
    )
    assert result.device.startswith("cuda")
    expected = "fp16" if mixed_precision == "fp16" else ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    assert result.precision == expected
    losses = [m.train_loss for m in result.history]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert result.best_metrics is not None and result.best_metrics.map >= 0.8
    # Resuming on CUDA restores the GradScaler and CUDA RNG states without error.
    again = train(
        TrainConfig(
            image_dataset, TINY_IMAGE_MODEL, hyperparameters=hp, device="auto", resume_from=checkpoint
        )
    )
    assert again.epochs_completed == 6
    # The artifact of a mixed-precision run predicts like the in-memory model.
    info = publish_result(result, tmp_path / "model.tar")
    images = [np.full((32, 32, 3), 200, dtype=np.uint8)]
    pil = [Image.fromarray(a) for a in images]
    in_memory = Predictor.from_model(result.model, result.labels, result.thresholds)
    np.testing.assert_allclose(load(info.path).predict_proba(pil), in_memory.predict_proba(pil), atol=1e-5)
