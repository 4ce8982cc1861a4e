"""Reading stored datasets, splitting them, and turning them into torch Datasets.

The torch Datasets and image transforms (`apl.data.images`, `apl.data.text`) load on first
use, so torch-free code can read and split a stored dataset exactly as training does: the API
(`load_stored_dataset`, `job_split`) and `apl.baseline` (the same split as a sweep's children).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from apl.data.split import job_split, split_indices, split_test_indices, unannotated_labels
from apl.data.stored import StoredDataset, load_stored_dataset

if TYPE_CHECKING:
    from apl.data.images import (
        ImageDataset,
        build_transform,
        collate_images,
        decode_image,
        open_image,
        resolve_preprocessing,
    )
    from apl.data.text import TextCollator, TextDataset

#: Names served by a torch-importing module, loaded when first asked for.
_LAZY = {
    "ImageDataset": "apl.data.images",
    "build_transform": "apl.data.images",
    "collate_images": "apl.data.images",
    "decode_image": "apl.data.images",
    "open_image": "apl.data.images",
    "resolve_preprocessing": "apl.data.images",
    "TextCollator": "apl.data.text",
    "TextDataset": "apl.data.text",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ImageDataset",
    "StoredDataset",
    "TextCollator",
    "TextDataset",
    "build_transform",
    "collate_images",
    "decode_image",
    "job_split",
    "load_stored_dataset",
    "open_image",
    "resolve_preprocessing",
    "split_indices",
    "split_test_indices",
    "unannotated_labels",
]
