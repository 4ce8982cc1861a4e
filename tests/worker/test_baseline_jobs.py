"""A job whose fine-tuned model loses to its linear probe publishes both, points at the probe and says why."""

from __future__ import annotations

from sqlalchemy import select

from api.services.models import describe, evaluation
from core.db.models import JobEvent, Model
from core.db.session import session_scope
from core.jobs.document import job_from_row
from core.settings import Settings
from tests.apl.synthetic import write_text_dataset
from tests.worker.harness import job_row, make_dataset, make_job, make_owner
from worker.runner import run_job

#: A forced loss: one optimizer step at a negligible learning rate from a random head.
ONE_STEP = {"epochs": 1, "batch_size": 256, "learning_rate": 1e-9, "head_init": "random"}


def test_one_step_of_training_publishes_the_probe_and_says_why(settings: Settings) -> None:
    owner = make_owner(settings)
    dataset = make_dataset(settings, owner, lambda d: write_text_dataset(d, n=60), "text")
    job_id = make_job(settings, owner, dataset, {"base_model": "minilm-l6", "hyperparameters": ONE_STEP})
    assert run_job(job_id, settings) == "succeeded"
    job = job_row(settings, job_id)
    with session_scope(settings) as session:
        models = {
            row.metrics["kind"]: row for row in session.scalars(select(Model).where(Model.job_id == job_id))
        }
        events = list(
            session.scalars(select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.level == "warning"))
        )
        session.expunge_all()
    assert set(models) == {"fine_tuned", "linear_probe"}
    probe, fine_tuned = models["linear_probe"], models["fine_tuned"]
    assert fine_tuned.metrics["head_init"] == "random" and "head_init" not in probe.metrics
    assert job.model_id == probe.id
    best = job.best_metrics or {}
    assert best["models"] == {"fine_tuned": fine_tuned.id, "linear_probe": probe.id}
    assert best["map"] == fine_tuned.metrics["map"] < probe.metrics["map"]
    baselines = best["baselines"]
    assert baselines["selected"] == "linear_probe" and set(baselines) >= {
        "linear_probe",
        "tfidf",
        "fine_tuned",
    }
    assert baselines["comparison"].startswith(f"fine-tuned {best['map']:.3f} vs linear probe ")
    document = job_from_row(job, None)
    warning = next(w for w in document.warnings if w.startswith("the linear probe baseline"))
    assert f"{probe.metrics['map']:.3f}" in warning and f"{best['map']:.3f}" in warning
    assert warning in [event.message for event in events]
    with session_scope(settings) as session:
        shown = describe(session, [probe])[0]
    assert shown.kind == "linear_probe" and shown.comparison == baselines["comparison"]
    assert (shown.dataset_id, shown.loss, shown.job_id) == (dataset, job.spec["loss"]["name"], job_id)
    assert shown.warnings == document.warnings
    assert evaluation(probe).baselines == probe.metrics["baselines"]
    assert all(settings.files.artifact(row.id).is_file() for row in models.values())
