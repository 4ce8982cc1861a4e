"""What one run measures: the full plan for an H200, the quick plan for the CPU dry run.

Both plans visit the same sections, cases and table rows; the quick one only shrinks
shapes, batches and repeat counts so that `make test` runs it in seconds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

Shape = tuple[int, int]


@dataclass(frozen=True)
class Plan:
    device: str
    quick: bool
    #: Loss section: (rows, classes) shapes, warm-up calls and timed repeats per variant.
    loss_shapes: tuple[Shape, Shape, Shape]
    loss_warmup: int
    loss_repeats: int
    #: Training throughput: batch sizes, input sizes, steps skipped and steps timed.
    text_batch: int
    image_batch: int
    image_size: int
    max_length: int
    text_words: int
    warmup_steps: int
    timed_steps: int
    num_workers: int
    #: The short convergence run (bf16 autocast on CUDA).
    converge_samples: int
    converge_batch: int
    converge_epochs: int
    converge_image_size: int
    #: Serving: single requests, then micro-batches of `serve_batch_size`.
    serve_single: int
    serve_batches: int
    serve_batch_size: int
    #: Run the suite's `gpu`-marked tests in a subprocess.
    gpu_tests: bool
    gpu_tests_timeout_s: float


def full_plan(device: str, workers: int) -> Plan:
    """Sizes for one H200 (about 139 GiB): about 5 minutes of work in all."""
    return Plan(
        device=device,
        quick=False,
        loss_shapes=((256, 1000), (4096, 1000), (4096, 9605)),
        loss_warmup=10,
        loss_repeats=100,
        text_batch=1024,
        image_batch=512,
        image_size=224,
        max_length=128,
        text_words=100,
        warmup_steps=3,
        timed_steps=10,
        num_workers=workers,
        converge_samples=2048,
        converge_batch=64,
        converge_epochs=4,
        converge_image_size=224,
        serve_single=200,
        serve_batches=20,
        serve_batch_size=32,
        gpu_tests=True,
        gpu_tests_timeout_s=240.0,
    )


def quick_plan(device: str) -> Plan:
    """Tiny sizes for the dry run on two CPU cores (every section, one or two steps each)."""
    return Plan(
        device=device,
        quick=True,
        loss_shapes=((8, 100), (32, 100), (32, 300)),
        loss_warmup=1,
        loss_repeats=3,
        text_batch=4,
        image_batch=4,
        image_size=32,
        max_length=16,
        text_words=8,
        warmup_steps=1,
        timed_steps=1,
        num_workers=0,
        converge_samples=12,
        converge_batch=4,
        converge_epochs=2,
        converge_image_size=32,
        serve_single=4,
        serve_batches=2,
        serve_batch_size=32,
        gpu_tests=True,  # without CUDA they skip, in a few seconds; the subprocess path stays tested
        gpu_tests_timeout_s=120.0,
    )


class Deadline:
    """The run's time budget: sections ask before each case and skip what no longer fits."""

    def __init__(self, budget_s: float) -> None:
        self.budget_s = budget_s
        self.start = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return self.budget_s - self.elapsed()

    def allows(self, seconds: float = 0.0) -> bool:
        return self.left() > seconds
