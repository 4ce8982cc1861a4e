"""Reading stored datasets, splitting them, and turning them into torch Datasets.

The split and the stored-dataset reader are torch-free and imported at once; the torch
Datasets (`images`, `text`) are imported on first use, so torch-free code such as
`apl.baseline` can use the same split as training without loading torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from apl.data.split import split_indices, split_test_indices
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

#: Names that need torch, and the module that holds each.
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
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'apl.data' has no attribute '{name}'")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "ImageDataset",
    "StoredDataset",
    "TextCollator",
    "TextDataset",
    "build_transform",
    "collate_images",
    "decode_image",
    "load_stored_dataset",
    "open_image",
    "resolve_preprocessing",
    "split_indices",
    "split_test_indices",
]
