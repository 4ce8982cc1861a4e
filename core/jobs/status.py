"""The states of a job (and of a sweep, which follows its children), and how a worker's run of one ended.

Every comparison of a status in Python uses these members; the database stores their
string values, so rows written before the enum existed read back unchanged.
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


#: A job in one of these states has ended and never changes again.
FINAL_STATUSES: frozenset[JobStatus] = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
#: A job in one of these states still needs its dataset and can change.
ACTIVE_STATUSES: frozenset[JobStatus] = frozenset({JobStatus.QUEUED, JobStatus.RUNNING})


class RunOutcome(StrEnum):
    """How one delivery of a job ended in a worker (worker.runner's return value, for logs and tests).

    The first three are the job's final status, written by this run; the others leave the
    job to another run (or found it not queued). Values are the words the logs have always shown.
    """

    SUCCEEDED = JobStatus.SUCCEEDED.value
    FAILED = JobStatus.FAILED.value
    CANCELLED = JobStatus.CANCELLED.value
    #: The worker is shutting down; the job is queued again and resumes from its last checkpoint.
    RELEASED = "released"
    #: The lease was taken back by a sweeper; another attempt owns the job.
    LOST = "lost"
    #: A redelivered or stale message: the job was not queued.
    SKIPPED = "skipped"
    #: A training process of a multi-device job died; queued again like a lost worker.
    REQUEUED = "requeued"
    #: A rank other than 0 of a multi-device job trained; rank 0 says how the job ended.
    TRAINED = "trained"

    @property
    def ended_job(self) -> bool:
        """Whether this run wrote the job's final status (then its webhook and cleanup follow)."""
        return self in ENDING_OUTCOMES


#: The outcomes of a run that ended the job itself.
ENDING_OUTCOMES: frozenset[RunOutcome] = frozenset(
    {RunOutcome.SUCCEEDED, RunOutcome.FAILED, RunOutcome.CANCELLED}
)
