"""The Job document: a job's spec is parsed (and read) once per job, not on every status poll."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import event, select

from apl.spec import JobSpec
from core.db.models import Job as JobRow
from core.db.session import session_factory, session_scope
from core.jobs import document
from core.settings import Settings
from tests.apl.synthetic import write_text_dataset
from tests.worker.harness import make_dataset, make_job, make_owner


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


def test_rows_of_the_document_columns_read_each_spec_once(settings: Settings) -> None:
    """The job list's path: plain rows without the spec, which comes from one query, then the cache."""
    owner = make_owner(settings)
    dataset = make_dataset(settings, owner, lambda d: write_text_dataset(d, n=12), "text")
    ids = [make_job(settings, owner, dataset, {"base_model": "minilm-l6"}) for _ in range(3)]
    statements: list[str] = []
    engine = session_factory(settings).kw["bind"]

    def seen(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        for _ in range(2):
            with session_scope(settings) as session:
                rows = session.execute(select(*document.COLUMNS).where(JobRow.id.in_(ids))).all()
                specs = document.specs(session, [r.id for r in rows])
                documents = [document.job_from_row(r, None, specs[r.id]) for r in rows]
                full = [document.job_from_row(session.get_one(JobRow, i), None) for i in ids]
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    spec_reads = [s for s in statements if "jobs.spec" in s and "jobs.status" not in s]
    assert len(spec_reads) == 1  # the first pass; the second found all three in the cache
    assert sorted(d.model_dump_json() for d in documents) == sorted(d.model_dump_json() for d in full)
    with pytest.raises(TypeError, match="no spec"):
        document.job_from_row(rows[0], None)
