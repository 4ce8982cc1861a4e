"""CPU training throughput of the demo base models, through the real training loop.

Writes a synthetic dataset in the normalized stored format, runs `apl.training.train`
for one epoch and times the optimizer steps (forward, loss, backward, clipping,
AdamW, scheduler, data loading), skipping the first steps as warm-up, and reports
the best of a few runs because the CPU may be shared. Model loading and validation
are not counted.

    .venv/bin/python benchmarks/train_throughput.py [--threads 2] [--batch-size 16] [--steps 12]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from apl.spec import Hyperparameters
from apl.training import Progress, TrainConfig, TrainerCallback, train

WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "red",
    "blue",
    "apple",
    "bread",
    "runs",
    "sleeps",
    "quickly",
    "today",
    "near",
    "river",
    "under",
    "tree",
]
LABELS = ["l0", "l1", "l2", "l3", "l4"]
WARMUP_STEPS = 2


class StepTimer(TrainerCallback):
    """Times the steps after warm-up and stops the run once enough were measured."""

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.times: list[float] = []

    def on_step_end(self, progress: Progress) -> None:
        self.times.append(time.perf_counter())

    def should_stop(self) -> bool:
        return len(self.times) >= self.steps + WARMUP_STEPS


def write_dataset(root: Path, modality: str, n: int, image_size: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    lines = []
    for i in range(n):
        labels = [name for name in LABELS if rng.random() < 0.3]
        if modality == "text":
            lines.append({"text": " ".join(rng.choice(WORDS, size=12)), "labels": labels})
        else:
            (root / "images").mkdir(exist_ok=True)
            pixels = rng.integers(0, 256, size=(image_size, image_size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "images" / f"{i}.png")
            lines.append({"image": f"images/{i}.png", "labels": labels})
    (root / "samples.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (root / "labels.json").write_text(json.dumps(LABELS))
    return root


def measure(base_model: str, modality: str, batch_size: int, steps: int, image_size: int, tmp: Path) -> float:
    n = batch_size * (steps + WARMUP_STEPS + 1) * 5 // 4 + 2  # enough for one epoch after the split
    dataset = write_dataset(tmp / base_model.replace(":", "_"), modality, n, image_size)
    hp = Hyperparameters(
        epochs=1, batch_size=batch_size, image_size=image_size, max_length=32, learning_rate=1e-4
    )
    timer = StepTimer(steps)
    train(TrainConfig(dataset, base_model, hyperparameters=hp, device="cpu"), [timer])
    measured = timer.times[WARMUP_STEPS - 1 : WARMUP_STEPS + steps]
    return batch_size * (len(measured) - 1) / (measured[-1] - measured[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=2, help="best of N runs (the CPU may be shared)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cases = [
        ("minilm-l6", "text", "12-word texts, max_length 32"),
        ("mobilenetv2-100", "image", f"{args.image_size}x{args.image_size} px"),
        ("efficientnet-lite0", "image", f"{args.image_size}x{args.image_size} px"),
    ]
    print(
        f"CPU training throughput, {args.threads} threads, batch {args.batch_size}, torch {torch.__version__}"
    )
    print(f"{'base model':<20} {'input':<30} {'samples/s':>10} {'ms/step':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for base_model, modality, description in cases:
            rate = max(
                measure(
                    base_model, modality, args.batch_size, args.steps, args.image_size, Path(tmp) / str(i)
                )
                for i in range(args.repeats)
            )
            print(f"{base_model:<20} {description:<30} {rate:>10.1f} {1000 * args.batch_size / rate:>9.0f}")


if __name__ == "__main__":
    main()
