"""The client's view of a live stream: a progress event moves the Job it holds, nothing else."""

from __future__ import annotations

from aplserve.client.core import _merged
from core.jobs.document import JOB_EXAMPLE


def test_a_progress_event_updates_the_held_job_and_keeps_its_spec() -> None:
    job = _merged(None, "status", dict(JOB_EXAMPLE))
    moved = {
        "id": job.id,
        "status": "running",
        "progress": {"epoch": 2, "epochs": 3, "step": 80, "steps": 120},
        "best_metrics": {"map": 0.74, "epoch": 2},
    }
    after = _merged(job, "progress", moved)
    assert after.progress.epoch == 2 and after.progress.step == 80
    assert after.best_metrics == {"map": 0.74, "epoch": 2}
    assert after.spec == job.spec and after.created_at == job.created_at and after.name == job.name
    # A status event replaces the job whole.
    assert _merged(after, "status", dict(JOB_EXAMPLE)) == job
