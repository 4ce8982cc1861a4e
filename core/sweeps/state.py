"""A sweep's state, computed from its children: the one place with the rules.

A sweep stores no status of its own. Its children are ordinary jobs whose every
change goes through `core.jobs.lifecycle` (fenced, conditional UPDATEs); a second
status column would need a second set of conditional updates from every place a
job ends (worker, lease sweeper, API cancel), and any one missed would let the two
drift. Reading the children instead costs one indexed query (at most 64 rows) and is
right by construction:

    queued     every child is queued
    running    some child has started and not every child has ended
    cancelled  every child has ended and the sweep was cancelled
    failed     every child has ended and a candidate has no result (the error says which)
    succeeded  every child has ended and every candidate has at least one result

A cancelled sweep whose running children are still stopping stays `running` with
`cancel_requested`, as a job does. A result is a succeeded child with its test
metrics; a child that failed or was cancelled on its own only fails the sweep when
it leaves its candidate with none.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core.jobs.status import FINAL_STATUSES, JobStatus
from core.sweeps.spec import SweepSpec, candidate_key, candidate_label, configured


@dataclass(frozen=True)
class Child:
    """What the sweep rules and the leaderboard read of one child job."""

    job_id: str
    #: Index of the child's loss in the sweep's candidates (None: matches none, never expected).
    candidate: int | None
    seed: int
    status: JobStatus
    finished_at: datetime | None
    model_id: str | None
    error_code: str | None
    best_metrics: dict[str, Any] | None
    #: The job's attempt count; for a succeeded job, the attempt whose files are kept.
    attempts: int = 0
    #: "trial" (a search trial, never scored on the test split) or "replicate".
    role: str | None = None
    created_at: datetime | None = None

    def test_metrics(self) -> dict[str, Any] | None:
        """The child's scores on the test split, when it succeeded and was scored."""
        if self.status != JobStatus.SUCCEEDED or not self.best_metrics:
            return None
        test = self.best_metrics.get("test")
        return test if isinstance(test, dict) else None

    @property
    def has_result(self) -> bool:
        return self.test_metrics() is not None


def candidate_keys(spec: SweepSpec, search_result: dict[str, Any] | None) -> dict[str, int]:
    """candidate_key of each candidate's replicates -> its index: with a search, the loss as its
    chosen configuration set it (loss parameters may have been tuned)."""
    index = {candidate_key(candidate): i for i, candidate in enumerate(spec.candidates)}
    for position, chosen in (search_result or {}).items():
        i = int(position)
        tuned = configured(spec, spec.candidates[i], chosen["config"], seed=spec.seeds[0]).loss
        index[candidate_key(tuned)] = i
    return index


def children_of(
    spec: SweepSpec, rows: Sequence[Any], search_result: dict[str, Any] | None = None
) -> list[Child]:
    """Children from job rows, in the sweep's order (trials first, then seed by seed, candidates in
    order)."""
    index = candidate_keys(spec, search_result)
    seed_rank = {seed: i for i, seed in enumerate(spec.seeds)}
    children = [
        Child(
            job_id=row.id,
            candidate=index.get(candidate_key(row.spec["loss"])),
            seed=int(row.spec["hyperparameters"]["seed"]),
            status=JobStatus(row.status),
            finished_at=row.finished_at,
            model_id=row.model_id,
            created_at=getattr(row, "created_at", None),
            error_code=row.error_code,
            best_metrics=row.best_metrics,
            attempts=row.attempts,
            role=getattr(row, "role", None),
        )
        for row in rows
    ]
    last = len(spec.candidates)

    def order(child: Child) -> tuple[int, float, int, int]:
        if child.role == "trial":  # in the order they were asked for
            return 0, child.created_at.timestamp() if child.created_at else 0.0, 0, 0
        position = last if child.candidate is None else child.candidate
        return 1, 0.0, seed_rank.get(child.seed, len(seed_rank)), position

    return sorted(children, key=order)


@dataclass(frozen=True)
class SweepState:
    status: JobStatus
    finished_at: datetime | None
    #: {"code", "message"} of a failed sweep, else None.
    error: dict[str, str] | None
    #: Children per status, plus "total".
    counts: dict[str, int]

    @property
    def ended(self) -> bool:
        return self.status.is_final


def _missing_results(spec: SweepSpec, children: Sequence[Child]) -> str | None:
    """A sentence naming each candidate left with no result and how its children ended."""
    parts = []
    for index, candidate in enumerate(spec.candidates):
        mine = [c for c in children if c.candidate == index]
        if any(c.has_result for c in mine):
            continue
        ends = Counter(c.error_code or c.status.value for c in mine)
        how = ", ".join(f"{what} x{n}" if n > 1 else what for what, n in sorted(ends.items()))
        parts.append(f"{candidate_label(candidate)} ({how or 'no jobs'})")
    if not parts:
        return None
    return "no result for " + "; ".join(parts) + "; see the child jobs for details"


def sweep_state(
    spec: SweepSpec, children: Sequence[Child], cancel_requested: bool, phase: str | None = None
) -> SweepState:
    """The sweep's status, end time and error, from its children (see the module docstring).

    A search sweep whose children have all ended while it is still in its `search` phase
    is running: its next trials or its replicates are about to be queued
    (core.sweeps.search). Only replicates count as results.
    """
    counts = Counter(c.status.value for c in children)
    summary = {status.value: counts.get(status.value, 0) for status in JobStatus} | {"total": len(children)}
    if not children or any(c.status not in FINAL_STATUSES for c in children):
        started = any(c.status != JobStatus.QUEUED for c in children)
        return SweepState(JobStatus.RUNNING if started else JobStatus.QUEUED, None, None, summary)
    finished_at = max((c.finished_at for c in children if c.finished_at is not None), default=None)
    if cancel_requested:
        return SweepState(JobStatus.CANCELLED, finished_at, None, summary)
    if phase == "search":
        return SweepState(JobStatus.RUNNING, None, None, summary)
    missing = _missing_results(spec, [c for c in children if c.role != "trial"])
    if missing is not None:
        error = {"code": "candidate_without_result", "message": missing}
        return SweepState(JobStatus.FAILED, finished_at, error, summary)
    return SweepState(JobStatus.SUCCEEDED, finished_at, None, summary)
