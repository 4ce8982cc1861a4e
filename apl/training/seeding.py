"""Seeding and capturing every random number generator a run touches.

Same seed on the same device and thread count gives the same run; the captured
states go into checkpoints so a resumed run continues the very same random stream
(dropout masks, augmentations) as an uninterrupted one. DataLoader shuffling uses its
own generator, reseeded from (seed, epoch) at each epoch, so it needs no state.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

StateTensors = dict[str, torch.Tensor]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def epoch_seed(seed: int, epoch: int) -> int:
    """The DataLoader generator's seed for `epoch` (distinct per epoch, stable per seed)."""
    return (seed * 1_000_003 + epoch * 7919) % 2**63


def seed_worker(worker_id: int) -> None:
    """DataLoader worker_init_fn: derive python/numpy seeds from the worker's torch seed."""
    worker_seed = torch.initial_seed() % 2**32
    random.seed(worker_seed)
    np.random.seed(worker_seed)


def capture_rng() -> tuple[dict[str, Any], StateTensors]:
    """(JSON-able part, tensors) of the python, numpy, torch and CUDA generator states."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    meta = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, int(pos), int(has_gauss), float(cached)],
    }
    tensors: StateTensors = {
        "rng.numpy": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "rng.torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    return meta, tensors


def restore_rng(meta: dict[str, Any], tensors: StateTensors) -> None:
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, pos, has_gauss, cached = meta["numpy"]
    keys = tensors["rng.numpy"].numpy().astype(np.uint32)
    np.random.set_state((kind, keys, pos, has_gauss, cached))
    torch.set_rng_state(tensors["rng.torch"])
    cuda_states = [tensors[f"rng.cuda.{i}"] for i in range(len(tensors)) if f"rng.cuda.{i}" in tensors]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states[: torch.cuda.device_count()])
