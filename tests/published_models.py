"""The Model rows a worker writes for a succeeded job, written directly (no trained network needed).

Shared by the tests of telling models apart (tests/api/test_model_listing.py and the
dashboard's tests/e2e/test_model_listing_page.py): real jobs and a real sweep are queued
through the API, and what a worker would publish for them is inserted the way
core.registry inserts it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.db.models import Job, new_id
from core.db.session import session_scope
from core.registry import ModelRecord, insert_model
from core.settings import Settings


def publish_model(
    settings: Settings,
    job_id: str,
    labels: list[str],
    kind: str = "fine_tuned",
    *,
    map_value: float = 0.5,
    point_job: bool | None = None,
    succeed: bool = True,
) -> str:
    """The job's Model row (or the linear probe beside it); with `succeed`, the job reads as succeeded.

    `point_job` (default: only for the fine-tuned model) makes the job's `model_id` point to it.
    """
    record = ModelRecord(
        id=new_id(),
        base_model="minilm-l6",
        modality="text",
        labels=labels,
        thresholds=dict.fromkeys(labels, 0.5),
        metrics={"map": map_value, "kind": kind},
        artifact_path="artifacts/none.tar",
        sha256="0" * 64,
        size_bytes=1,
    )
    points = kind == "fine_tuned" if point_job is None else point_job
    with session_scope(settings) as session:
        job = session.get_one(Job, job_id)
        if succeed:
            job.status, job.attempts = "succeeded", 1
        insert_model(session, record, owner_id=job.owner_id, job_id=job_id, point_job=points)
    return record.id


@dataclass
class ModelRegistry:
    """Two datasets, a named focal job (with its linear probe), an unnamed apl job, a sweep of two."""

    first: dict[str, Any]
    second: dict[str, Any]
    sweep: dict[str, Any]
    focal_job: str
    apl_job: str
    focal: str
    probe: str
    apl: str
    children: dict[str, str]  # child model id -> its loss
