"""Evaluation rounds: a long pass over the training data split into evaluated parts.

A step budget (`apl.training.budget`) on a large set splits each pass into rounds, each
ending with an evaluation and a checkpoint. A round trains its share of the pass's order
(the batches `round_batches` gives it), drawn exactly as the whole pass would be, so the
rounds of a pass together train on every sample once, and a run resumed after round k
continues with round k + 1 without replaying anything.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader, Sampler

from apl.training.budget import Budget, round_batches


class RoundSlice(Sampler[int]):
    """One round's share of each pass's order: its batches, as `apl.training.budget.round_batches`.

    It wraps the sampler the loader had (the shuffle, or this rank's shard of it), so a
    round draws the pass's order exactly as the whole pass would and keeps only its part;
    `select` picks the round before the loader is iterated.
    """

    def __init__(self, order: Sampler[int], batch_size: int, batches: int, rounds: int) -> None:
        self.order = order
        self.batch_size = batch_size
        self.batches = batches
        self.rounds = rounds
        self.part = 0

    def select(self, part: int) -> None:
        self.part = part

    def _bounds(self) -> tuple[int, int]:
        start, stop = round_batches(self.batches, self.rounds, self.part)
        size = len(self.order)  # type: ignore[arg-type]
        return min(start * self.batch_size, size), min(stop * self.batch_size, size)

    def __len__(self) -> int:
        start, stop = self._bounds()
        return stop - start

    def __iter__(self) -> Iterator[int]:
        start, stop = self._bounds()
        return itertools.islice(iter(self.order), start, stop)


def in_rounds(loader: DataLoader[Any], rounds: int) -> DataLoader[Any]:
    """The same training loader, each iteration one round of a pass (`RoundSlice`)."""
    assert loader.batch_size is not None
    order = loader.sampler
    assert isinstance(order, Sampler)  # the shuffle (RandomSampler) or this rank's OrderShard
    sampler = RoundSlice(order, loader.batch_size, len(loader), rounds)
    return DataLoader(
        loader.dataset,
        sampler=sampler,
        batch_size=loader.batch_size,
        drop_last=loader.drop_last,
        generator=loader.generator,
        pin_memory=loader.pin_memory,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        worker_init_fn=loader.worker_init_fn,
    )


def steps_after(budget: Budget, pass_steps: int, epochs: int) -> int:
    """Optimizer steps of the first `epochs` epochs (or rounds) of the run."""
    rounds = budget.rounds_per_epoch
    full, part = divmod(epochs, rounds)
    return full * pass_steps + round_batches(pass_steps, rounds, part)[0] if part else full * pass_steps
