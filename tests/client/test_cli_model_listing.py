"""Models and jobs you can tell apart from the CLI (issue 28): name, dataset, loss, sweep and role
columns that fit 80 columns, `--dataset` / `--sweep` filters taking short ids, `models rename`.

Against the live embedded server of tests/client/conftest.py. The jobs and the sweep are real
and cancelled before they train (the rows are what matters here); the Model rows a worker
would publish for them are written the way core.registry writes them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from aplserve.client import Client
from core.db.models import Job, new_id
from core.db.session import dispose_engines, session_scope
from core.registry import ModelRecord, insert_model
from core.settings import Settings
from tests.client.conftest import LiveServer
from tests.client.test_live_cli import as_json, one_line, run

LABELS = ["animal", "color", "food"]


@pytest.fixture
def cli80(embedded: LiveServer) -> CliRunner:
    return CliRunner(env={"APLSERVE_URL": embedded.url, "APLSERVE_API_KEY": embedded.key, "COLUMNS": "80"})


def _publish(embedded: LiveServer, job_id: str, kind: str = "fine_tuned") -> str:
    """The Model row the worker writes for a job (its fine-tuned model, or the linear probe beside it)."""
    record = ModelRecord(
        id=new_id(),
        base_model="minilm-l6",
        modality="text",
        labels=LABELS,
        thresholds=dict.fromkeys(LABELS, 0.5),
        metrics={"map": 0.625, "kind": kind},
        artifact_path="artifacts/none.tar",
        sha256="0" * 64,
        size_bytes=1,
    )
    with session_scope(Settings(data_dir=embedded.data_dir)) as session:
        owner_id = session.get_one(Job, job_id).owner_id
        insert_model(session, record, owner_id=owner_id, job_id=job_id, point_job=kind == "fine_tuned")
    dispose_engines()
    return record.id


def _ended(embedded: LiveServer, job_ids: list[str], timeout: float = 60) -> None:
    """Wait until a worker that had claimed one of them has stopped it (within one step)."""
    deadline = time.monotonic() + timeout
    with Client(embedded.url, embedded.key) as client:
        while not all(client.jobs.get(job_id).finished for job_id in job_ids):
            assert time.monotonic() < deadline, "the cancelled jobs did not end"
            time.sleep(0.2)


@dataclass
class Listing:
    dataset: dict[str, Any]
    job: dict[str, Any]
    sweep: dict[str, Any]
    model: str
    probe: str
    children: dict[str, str]  # model id -> its job's loss


@pytest.fixture
def listing(cli80: CliRunner, embedded: LiveServer, text_csv: Path) -> Iterator[Listing]:
    upload = ["datasets", "upload", str(text_csv), "--name", "keywords-for-telling-models-apart", "--json"]
    dataset = as_json(run(cli80, *upload))
    job = as_json(
        run(
            cli80, "jobs", "create", "--dataset", dataset["id"][:8], "--model", "minilm-l6",
            "--loss", "focal", "--epochs", "1", "--name", "keywords focal", "--json",
        )
    )  # fmt: skip
    run(cli80, "jobs", "cancel", job["id"][:8])
    sweep = as_json(
        run(
            cli80, "sweeps", "create", "--dataset", dataset["id"][:8], "--model", "minilm-l6",
            "-c", "bce", "-c", "apl", "--seed", "0", "--epochs", "1", "--json",
        )
    )  # fmt: skip
    run(cli80, "sweeps", "cancel", sweep["id"][:8])
    _ended(embedded, [job["id"], *sweep["job_ids"]])
    model, probe = _publish(embedded, job["id"]), _publish(embedded, job["id"], "linear_probe")
    with Client(embedded.url, embedded.key) as client:
        losses = {job_id: client.jobs.get(job_id).spec.loss["name"] for job_id in sweep["job_ids"]}
    children = {_publish(embedded, job_id): loss for job_id, loss in losses.items()}
    yield Listing(dataset, job, sweep, model, probe, children)
    run(cli80, "datasets", "delete", dataset["id"], "--yes")


def _rows(lines: list[str]) -> dict[str, list[str]]:
    """The words of each table row by its short id (a wrapped cell's next line is left out)."""
    words = [line.split() for line in lines[2:]]
    return {row[0]: row for row in words if row and len(row[0]) == 8 and row[0] != "-"}


def _fits(text: str) -> list[str]:
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines), "\n".join(lines)
    return lines


def test_models_list_shows_what_tells_them_apart_and_filters_by_dataset_and_sweep(
    cli80: CliRunner, listing: Listing
) -> None:
    dataset8, sweep8 = listing.dataset["id"][:8], listing.sweep["id"][:8]
    on_dataset = as_json(run(cli80, "models", "list", "--dataset", dataset8, "--json"))
    assert {m["id"] for m in on_dataset} == {listing.model, listing.probe, *listing.children}
    by_id = {m["id"]: m for m in on_dataset}
    assert by_id[listing.probe]["kind"] == "linear_probe" and by_id[listing.probe]["name"] == "keywords focal"
    for model_id, loss in listing.children.items():
        child = by_id[model_id]
        assert (child["loss"], child["sweep_id"], child["role"]) == (loss, listing.sweep["id"], "replicate")
        assert child["dataset_name"] == "keywords-for-telling-models-apart"

    swept = as_json(run(cli80, "models", "list", "--sweep", sweep8, "--json"))
    assert {m["id"] for m in swept} == set(listing.children)
    paged = as_json(run(cli80, "models", "list", "--sweep", sweep8, "--all", "--limit", "1", "--json"))
    assert [m["id"] for m in paged] == [m["id"] for m in swept]

    lines = _fits(run(cli80, "models", "list", "--dataset", dataset8).stdout)
    header = lines[0].split()
    # Filtered on the dataset: every row would say the same, so its column makes room for the rest.
    assert header[:5] == ["id", "name", "loss", "role", "sweep"] and "created" in header, lines[0]
    rows = _rows(lines)
    assert set(rows) == {listing.model[:8], listing.probe[:8], *(m[:8] for m in listing.children)}
    for model_id, loss in listing.children.items():
        assert rows[model_id[:8]][2:5] == [loss, "replicate", sweep8]
    assert rows[listing.model[:8]][1:6] == ["keywords", "focal", "focal", "-", "-"]
    assert rows[listing.probe[:8]][1:6] == ["keywords", "focal", "focal", "probe", "-"]

    everything = _fits(run(cli80, "models", "list").stdout)
    assert everything[0].split()[:4] == ["id", "name", "dataset", "loss"]
    assert rows.keys() <= _rows(everything).keys()

    wide = run(cli80, "models", "list", "--sweep", sweep8, "--wide").stdout
    assert "replicate" in wide and listing.sweep["id"] in wide
    assert "keywords-for-telling-models-apart" in wide
    shown = run(cli80, "models", "get", next(iter(listing.children))[:8]).stdout
    assert f"sweep {listing.sweep['id']} (replicate)" in shown
    assert "dataset keywords-for-telling-models-apart" in shown


def test_jobs_list_marks_sweep_children_and_filters_by_dataset_and_sweep(
    cli80: CliRunner, listing: Listing
) -> None:
    dataset8, sweep8 = listing.dataset["id"][:8], listing.sweep["id"][:8]
    on_dataset = as_json(run(cli80, "jobs", "list", "--dataset", dataset8, "--json"))
    assert {j["id"] for j in on_dataset} == {listing.job["id"], *listing.sweep["job_ids"]}
    swept = as_json(run(cli80, "jobs", "list", "--sweep", sweep8, "--json"))
    assert {j["id"] for j in swept} == set(listing.sweep["job_ids"])
    assert {(j["sweep_id"], j["role"]) for j in swept} == {(listing.sweep["id"], "replicate")}

    lines = _fits(run(cli80, "jobs", "list", "--dataset", dataset8).stdout)
    assert "sweep" in lines[0].split() and "created" in lines[0].split()
    rows = _rows(lines)
    for job_id in listing.sweep["job_ids"]:
        assert sweep8 in rows[job_id[:8]]
    assert sweep8 not in rows[listing.job["id"][:8]]
    wide = run(cli80, "jobs", "list", "--sweep", sweep8, "--wide").stdout
    assert wide.count("replicate") == len(listing.sweep["job_ids"])
    child = run(cli80, "jobs", "get", listing.sweep["job_ids"][0][:8]).stdout
    assert f"sweep {listing.sweep['id']} (replicate)" in child


def test_models_rename_names_a_model_and_clear_gives_back_its_jobs_name(
    cli80: CliRunner, listing: Listing
) -> None:
    model8 = listing.model[:8]
    renamed = run(cli80, "models", "rename", model8, "focal, first try").stdout
    assert renamed.strip() == f"model {listing.model} is now named 'focal, first try'"
    listed = as_json(run(cli80, "models", "list", "--dataset", listing.dataset["id"][:8], "--json"))
    names = {m["id"]: m["name"] for m in listed}
    assert names[listing.model] == "focal, first try" and names[listing.probe] == "keywords focal"
    assert "'focal, first try'" in run(cli80, "models", "get", model8).stdout

    cleared = as_json(run(cli80, "models", "rename", model8, "--clear", "--json"))
    assert cleared["name"] == "keywords focal"
    child = next(iter(listing.children))
    run(cli80, "models", "rename", child[:8], "bce seed 0")
    assert run(cli80, "models", "rename", child[:8], "--clear").stdout.strip() == f"model {child} has no name"

    both = one_line(run(cli80, "models", "rename", model8, "x", "--clear", code=2))
    assert both.endswith("(invalid_option)")
    assert one_line(run(cli80, "models", "rename", model8, code=2)).endswith("(invalid_option)")
    too_long = one_line(run(cli80, "models", "rename", model8, "x" * 129, code=2))
    assert too_long.endswith("(validation_error)") and "name" in too_long
