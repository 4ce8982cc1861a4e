"""Reading stored datasets, splitting them, and turning them into torch Datasets."""

from apl.data.images import (
    ImageDataset,
    build_transform,
    collate_images,
    decode_image,
    open_image,
    resolve_preprocessing,
)
from apl.data.split import split_indices, split_test_indices
from apl.data.stored import StoredDataset, load_stored_dataset
from apl.data.text import TextCollator, TextDataset

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
