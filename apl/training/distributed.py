"""Data-parallel training with torch.distributed: what `apl.training.loop` plugs in for N processes.

Nothing here starts processes or exchanges gradients by hand: a launcher
(`torch.distributed.run`, which the worker starts) creates the ranks and the
rendezvous, `init_process_group` joins them (NCCL on CUDA, gloo on CPU),
`DistributedDataParallel` averages the gradients and the training data is sharded
the way `DistributedSampler` shards it (`OrderShard`). `apl` only takes the rank and
world size as plain arguments (`DistributedSetup`); it reads no environment itself
(torch's `env://` init does).

The rules that make N processes train like one:

- Same split and same global order: every rank splits the data with the job's seed,
  and draws the very order a single process draws for that epoch (`OrderShard`: the
  one-process RandomSampler on the same seeded generator, which the DataLoader also
  draws from first); rank r takes every N-th sample of it, as torch's
  `DistributedSampler` shards, so the ranks' k-th batches together are the one-process
  k-th batch. (`DistributedSampler` itself seeds its own permutation, which is not
  the one a single process draws, so it cannot be used as is.) The global batch size
  is the one asked for, `batch_size / N` per rank (it must divide evenly), and DDP's
  gradient average of the per-rank means is the mean over the global batch.
- Validation on the whole split: each rank predicts a contiguous shard and every rank
  gathers all of them back in order, so metrics, the best epoch and early stopping are
  computed from the same numbers on every rank, and mean what they mean with one device.
- One voice: only rank 0 gets the callbacks (metrics, checkpoints, the result); a stop
  that rank 0 decides (cancel) is shared at every step (`agree`), so all ranks leave
  the loop at the same step and no collective is left waiting.

What stays per rank: dropout masks (each rank draws its own), and BatchNorm statistics
on CPU (SyncBatchNorm needs CUDA; on CUDA the model's BatchNorm layers are converted).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import RandomSampler, Sampler

from apl.errors import DeviceUnavailableError


@dataclass(frozen=True)
class DistributedSetup:
    """Where this process stands in a group the launcher started (torchrun's RANK, WORLD_SIZE...)."""

    rank: int
    world_size: int
    #: The rank on this host: its CUDA device index.
    local_rank: int = 0
    #: How the ranks find each other; `env://` reads the launcher's MASTER_ADDR and MASTER_PORT.
    init_method: str = "env://"


def local_batch_size(batch_size: int, world_size: int) -> int:
    """The per-rank batch of a global `batch_size`; refuses one that does not split evenly."""
    if batch_size % world_size:
        raise DeviceUnavailableError(
            f"batch_size {batch_size} cannot be split evenly across {world_size} devices"
        )
    return batch_size // world_size


def rank_device(device: torch.device, setup: DistributedSetup | None) -> torch.device:
    """One CUDA device per rank (its local rank); CPU stays CPU."""
    if setup is None or device.type != "cuda":
        return device
    if setup.local_rank >= torch.cuda.device_count():
        raise DeviceUnavailableError(
            f"rank {setup.rank} needs CUDA device {setup.local_rank} but "
            f"{torch.cuda.device_count()} are visible"
        )
    torch.cuda.set_device(setup.local_rank)
    return torch.device("cuda", setup.local_rank)


class Parallel:
    """One process: every hook is the identity, so the single-device path is unchanged."""

    rank = 0
    world_size = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: nn.Module, find_unused: bool = False) -> nn.Module:
        """The module the training forward goes through (DDP for several ranks).

        `find_unused`: the model has parameters no forward uses (a transformers pooler).
        """
        return model

    def train_sampler(self, dataset: Any, generator: torch.Generator) -> OrderShard | None:
        """This rank's sampler of the training data (None: the DataLoader shuffles with `generator`)."""
        return None

    def agree(self, stop: bool) -> bool:
        """Whether any rank stops (rank 0 holds the callbacks, so it is rank 0's cancel)."""
        return stop

    def total(self, *values: float) -> list[float]:
        """Sums over the ranks (the epoch's training loss and sample count)."""
        return list(values)

    def shard(self, size: int) -> np.ndarray:
        """This rank's contiguous share of `size` ordered samples (validation, test)."""
        return np.arange(size)

    def gather(self, part: Any) -> list[Any]:
        """Every rank's `part`, in rank order."""
        return [part]

    def describe(self, device: torch.device) -> str:
        return str(device)


class DataParallel(Parallel):
    """N ranks in an initialized process group."""

    def __init__(self, setup: DistributedSetup, device: torch.device) -> None:
        self.rank = setup.rank
        self.world_size = setup.world_size
        self.device = device

    def wrap(self, model: nn.Module, find_unused: bool = False) -> nn.Module:
        if self.device.type == "cuda":
            # In place: the optimizer already holds these parameters, and the BatchNorm
            # layers of `model` itself must become synchronized ones.
            _sync_batchnorm(model)
            return DistributedDataParallel(
                model, device_ids=[self.device.index], find_unused_parameters=find_unused
            )
        return DistributedDataParallel(model, find_unused_parameters=find_unused)

    def train_sampler(self, dataset: Any, generator: torch.Generator) -> OrderShard:
        return OrderShard(RandomSampler(dataset, generator=generator), self.rank, self.world_size)

    def _flag_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    def agree(self, stop: bool) -> bool:
        flag = torch.tensor([1.0 if stop else 0.0], device=self._flag_device())
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item() > 0)

    def total(self, *values: float) -> list[float]:
        sums = torch.tensor(values, dtype=torch.float64, device=self._flag_device())
        dist.all_reduce(sums, op=dist.ReduceOp.SUM)
        return [float(v) for v in sums.cpu()]

    def shard(self, size: int) -> np.ndarray:
        return np.array_split(np.arange(size), self.world_size)[self.rank]

    def gather(self, part: Any) -> list[Any]:
        parts: list[Any] = [None] * self.world_size
        dist.all_gather_object(parts, part)
        return parts

    def describe(self, device: torch.device) -> str:
        return f"{device} x{self.world_size} ({dist.get_backend()})"


class OrderShard(Sampler[int]):
    """Rank `rank`'s share of `order`: every `world_size`-th index, as DistributedSampler shards.

    The order is padded with its first indices to a multiple of `world_size` (like
    DistributedSampler), so every rank runs the same number of steps; with a training
    split that the global batch divides, nothing is padded and the ranks' batches are
    exactly the one-process batches.
    """

    def __init__(self, order: Sampler[int], rank: int, world_size: int) -> None:
        self.order = order
        self.rank = rank
        self.world_size = world_size

    def __len__(self) -> int:
        return math.ceil(len(self.order) / self.world_size)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[int]:
        indices = list(self.order)
        padding = len(self) * self.world_size - len(indices)
        indices += (indices * math.ceil(padding / max(len(indices), 1)))[:padding]
        return iter(indices[self.rank :: self.world_size])


@contextlib.contextmanager
def process_group(setup: DistributedSetup | None, device: torch.device) -> Iterator[Parallel]:
    """Join the launcher's group for the run (NCCL on CUDA, gloo on CPU) and leave it after.

    A group of one, or no setup, is the plain single-process path. A group that is
    already initialized (a caller that joined it itself) is used and left open.
    """
    if setup is None or setup.world_size <= 1:
        yield Parallel()
        return
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo",
            init_method=setup.init_method,
            rank=setup.rank,
            world_size=setup.world_size,
            device_id=device if device.type == "cuda" else None,
        )
    try:
        yield DataParallel(setup, device)
    finally:
        if owned:
            dist.destroy_process_group()


def _sync_batchnorm(model: nn.Module) -> None:
    """Turn `model`'s BatchNorm layers into SyncBatchNorm ones (same parameters), in place."""
    if nn.SyncBatchNorm.convert_sync_batchnorm(model) is not model:  # type: ignore[no-untyped-call]
        raise DeviceUnavailableError("a model that is itself one BatchNorm layer cannot be synchronized")
