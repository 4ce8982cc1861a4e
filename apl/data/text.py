"""Text samples as a torch Dataset; tokenization happens per batch in the collator.

Tokenizing a whole batch at once with a fast tokenizer is quicker than per sample,
and padding to the longest text in the batch (not to `max_length`) keeps short-text
batches cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

Batch = tuple[dict[str, torch.Tensor], torch.Tensor]


class TextDataset(Dataset[tuple[str, np.ndarray]]):
    def __init__(self, texts: Sequence[str], targets: np.ndarray) -> None:
        self.texts = list(texts)
        self.targets = np.asarray(targets, dtype=np.float32)

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index: int) -> tuple[str, np.ndarray]:
        return self.texts[index], self.targets[index]


class TextCollator:
    """Turns a list of (text, target) into model inputs and a float target matrix."""

    def __init__(self, tokenizer: Any, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length

    def encode(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        encoded = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {key: value for key, value in encoded.items() if isinstance(value, torch.Tensor)}

    def __call__(self, items: Sequence[tuple[str, np.ndarray]]) -> Batch:
        texts = [text for text, _ in items]
        targets = torch.from_numpy(np.stack([target for _, target in items]))
        return self.encode(texts), targets
