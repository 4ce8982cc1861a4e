"""Small, learnable multi-label datasets written in the normalized stored format.

Text: each label has keywords; a sample's text holds the keywords of its labels
among filler words. Images: each label is a coloured square in a fixed quadrant.
Both are easy enough that a tiny model learns them in a few epochs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

TEXT_LABELS = {
    "animal": ["cat", "dog", "horse"],
    "color": ["red", "blue", "green"],
    "food": ["apple", "bread", "cheese"],
}
FILLER = ["the", "a", "is", "on", "with", "today", "there", "very", "some"]
IMAGE_LABELS = {"red": (0, (220, 30, 30)), "green": (1, (30, 200, 30)), "blue": (2, (40, 40, 230))}


def _label_sets(n: int, labels: list[str], rng: np.random.Generator) -> list[list[str]]:
    sets = []
    for i in range(n):
        chosen = [name for name in labels if rng.random() < 0.4]
        if not chosen and i % 5:  # a few samples stay without labels
            chosen = [labels[i % len(labels)]]
        sets.append(sorted(chosen))
    return sets


def write_text_dataset(root: Path, n: int = 48, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    labels = sorted(TEXT_LABELS)
    root.mkdir(parents=True, exist_ok=True)
    with (root / "samples.jsonl").open("w", encoding="utf-8") as out:
        for chosen in _label_sets(n, labels, rng):
            words = [str(rng.choice(FILLER)) for _ in range(4)]
            words += [str(rng.choice(TEXT_LABELS[name])) for name in chosen]
            rng.shuffle(words)
            out.write(json.dumps({"text": " ".join(words), "labels": chosen}) + "\n")
    (root / "labels.json").write_text(json.dumps(labels))
    return root


def write_image_dataset(root: Path, n: int = 40, size: int = 32, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    labels = sorted(IMAGE_LABELS)
    (root / "images" / "sub").mkdir(parents=True, exist_ok=True)
    half = size // 2
    with (root / "samples.jsonl").open("w", encoding="utf-8") as out:
        for i, chosen in enumerate(_label_sets(n, labels, rng)):
            pixels = rng.integers(0, 40, size=(size, size, 3), dtype=np.uint8)
            for name in chosen:
                quadrant, colour = IMAGE_LABELS[name]
                y, x = divmod(quadrant, 2)
                pixels[y * half : (y + 1) * half, x * half : (x + 1) * half] = colour
            relative = f"images/sub/{i:03d}.png"
            Image.fromarray(pixels).save(root / relative)
            out.write(json.dumps({"image": relative, "labels": chosen}) + "\n")
    (root / "labels.json").write_text(json.dumps(labels))
    return root


def write_tiny_bert(root: Path, dropout: float = 0.1) -> Path:
    """A 2-layer, 32-wide BERT with the MiniLM tokenizer, saved as a transformers directory.

    `dropout` is its hidden and attention dropout (transformers' default 0.1).
    """
    from transformers import AutoTokenizer, BertConfig, BertModel

    from apl.models import minilm_directory

    tokenizer = AutoTokenizer.from_pretrained(minilm_directory(), local_files_only=True)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    import torch

    torch.manual_seed(0)
    BertModel(config).save_pretrained(root)
    tokenizer.save_pretrained(root)
    return root
