"""Image samples as a torch Dataset plus the train/eval transforms.

The preprocessing comes from timm's data config for the model (mean, std,
interpolation) at the job's `image_size`; the resolved config is stored in the model
artifact so that inference builds exactly the evaluation transform used here.
Evaluation squashes the whole image to a square instead of centre-cropping it:
in multi-label data a label's object may sit at the border.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import Dataset

from apl.errors import DatasetError

Transform = Callable[[Image.Image], torch.Tensor]
Batch = tuple[dict[str, torch.Tensor], torch.Tensor]

#: Random resized crop keeps at least this share of the image area, so labels mostly stay visible.
TRAIN_CROP_SCALE = (0.6, 1.0)


def resolve_preprocessing(
    model: nn.Module, image_size: int, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The JSON-able preprocessing config (input size, mean, std, interpolation) for a timm model."""
    from timm.data.config import resolve_data_config

    config: dict[str, Any] = resolve_data_config(  # type: ignore[no-untyped-call]
        {"input_size": (3, image_size, image_size)}, model=model
    )
    config.update(overrides or {})
    return {
        "image_size": image_size,
        "interpolation": str(config["interpolation"]),
        "mean": [float(x) for x in config["mean"]],
        "std": [float(x) for x in config["std"]],
    }


def build_transform(preprocessing: dict[str, Any], *, train: bool) -> Transform:
    """Training: random resized crop and horizontal flip. Evaluation: resize only."""
    from timm.data.transforms_factory import create_transform

    size = int(preprocessing["image_size"])
    common: dict[str, Any] = {
        "input_size": (3, size, size),
        "interpolation": preprocessing["interpolation"],
        "mean": tuple(preprocessing["mean"]),
        "std": tuple(preprocessing["std"]),
    }
    if train:
        # color_jitter=None: colour may be what a label means; timm accepts None at run time.
        common |= {"scale": TRAIN_CROP_SCALE, "hflip": 0.5, "color_jitter": None}
        transform = create_transform(is_training=True, **common)
    else:
        transform = create_transform(is_training=False, crop_pct=1.0, crop_mode="squash", **common)
    return transform  # type: ignore[no-any-return]


def open_image(path: str | BinaryIO) -> Image.Image:
    """Decode an image to RGB; a broken file is a dataset error, not a crash.

    PIL's decompression-bomb limit stays in force (an error above twice MAX_IMAGE_PIXELS).
    """
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"an image cannot be decoded ({type(exc).__name__})") from exc


def decode_image(data: bytes) -> Image.Image:
    """Decode encoded image bytes (PNG, JPEG, WebP, ...) to RGB."""
    return open_image(io.BytesIO(data))


class ImageDataset(Dataset[tuple[torch.Tensor, np.ndarray]]):
    def __init__(self, paths: Sequence[str], targets: np.ndarray, transform: Transform) -> None:
        self.paths = list(paths)
        self.targets = np.asarray(targets, dtype=np.float32)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, np.ndarray]:
        return self.transform(open_image(self.paths[index])), self.targets[index]


def collate_images(items: Sequence[tuple[torch.Tensor, np.ndarray]]) -> Batch:
    pixels = torch.stack([pixels for pixels, _ in items])
    targets = torch.from_numpy(np.stack([target for _, target in items]))
    return {"pixel_values": pixels}, targets
