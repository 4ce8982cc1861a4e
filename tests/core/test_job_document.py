"""The Job document: a job's spec is parsed once per job, not on every status poll."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from apl.spec import JobSpec
from core.db.models import Job as JobRow
from core.jobs import document


def row(spec: dict[str, object]) -> JobRow:
    return JobRow(
        id=str(uuid.uuid4()),
        owner_id="owner",
        status="succeeded",
        spec=spec,
        created_at=datetime.now(UTC),
        progress={"epoch": 1, "epochs": 1},
        cancel_requested=False,
        attempts=1,
    )


def stored_spec() -> dict[str, object]:
    return JobSpec(dataset_id="d", base_model="minilm-l6").model_dump(mode="json")


def test_a_rows_spec_is_validated_once_and_read_back_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    parses: list[object] = []
    validate = JobSpec.model_validate

    def counted(value: object) -> JobSpec:
        parses.append(value)
        return validate(value)

    monkeypatch.setattr(document.JobSpec, "model_validate", counted)
    job = row(stored_spec())
    first, second = document.job_from_row(job, None), document.job_from_row(job, 2)
    assert len(parses) == 1
    assert first.spec == second.spec == JobSpec.model_validate(job.spec)
    assert second.queue_position == 2 and second.spec.hyperparameters.learning_rate == 2e-4


def test_the_cache_holds_a_bounded_number_of_specs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(document, "SPEC_CACHE_SIZE", 3)
    rows = [row(stored_spec()) for _ in range(5)]
    for job in rows:
        document.job_from_row(job, None)
    assert len(document._specs) == 3 and rows[-1].id in document._specs and rows[0].id not in document._specs
