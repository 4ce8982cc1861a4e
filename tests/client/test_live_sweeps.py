"""A loss tournament end to end: the Python client and the CLI against the live embedded
server, whose real worker trains every child (a tiny BERT on the keyword dataset)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from apl.predictions import SplitPredictions
from aplserve.cli import app
from aplserve.client import Client, Dataset, Job, Sweep
from aplserve.commands.sweeps import parse_candidate
from tests.client.conftest import LiveServer

HYPERPARAMETERS = {"epochs": 2, "batch_size": 8, "learning_rate": 3e-3, "max_length": 16}
SWEEP_TIMEOUT = 300.0


@pytest.fixture(scope="module")
def dataset(embedded: LiveServer, text_csv: Path) -> Dataset:
    with Client(embedded.url, embedded.key) as client:
        return client.datasets.upload(text_csv, name="keywords-sweeps")


def _predictions(embedded: LiveServer, job: Job) -> SplitPredictions:
    return SplitPredictions.load(embedded.data_dir / "predictions" / job.id / f"test-{job.attempts}.npz")


def test_a_sweep_runs_to_a_leaderboard_that_follows_the_contract(
    embedded: LiveServer, dataset: Dataset, tiny_bert: Path
) -> None:
    seen: list[tuple[str, list[str]]] = []
    with Client(embedded.url, embedded.key) as client:
        created = client.sweeps.create(
            dataset.id, f"hf:{tiny_bert}", candidates=["bce", {"name": "apl", "gamma_neg": 2.0}],
            seeds=[0, 1], hyperparameters=HYPERPARAMETERS, test_fraction=0.25,
        )  # fmt: skip
        assert created.status in ("queued", "running") and len(created.job_ids) == 4  # a worker may be quick
        sweep = client.sweeps.wait(
            created.id, timeout=SWEEP_TIMEOUT, poll_interval=0.5,
            on_update=lambda s, jobs: seen.append((s.status, [j.status for j in jobs])),
        )  # fmt: skip
        assert sweep.status == "succeeded", (sweep.error, [client.jobs.get(j).error for j in sweep.job_ids])
        assert "running" in {status for status, _ in seen} and sweep.finished_at is not None
        jobs = client.sweeps.children(sweep.id)
        board = client.sweeps.leaderboard(sweep.id)
        assert client.sweeps.get(sweep.id) == sweep and sweep.id in {s.id for s in client.sweeps.iterate()}
        _check_children(embedded, sweep, jobs)
        _check_board(client, sweep, jobs, board.model_dump(mode="json"))


def _check_children(embedded: LiveServer, sweep: Sweep, jobs: list[Job]) -> None:
    """Ordinary jobs with sweep_id; per seed, every candidate was scored on the same test samples."""
    assert {j.id for j in jobs} == set(sweep.job_ids) and all(j.sweep_id == sweep.id for j in jobs)
    by_seed: dict[int, list[SplitPredictions]] = {}
    for job in jobs:
        assert (
            job.status == "succeeded" and job.best_metrics and job.best_metrics["test"]["num_samples"] == 12
        )
        by_seed.setdefault(job.spec.hyperparameters["seed"], []).append(_predictions(embedded, job))
    first, second = by_seed[0], by_seed[1]
    assert np.array_equal(first[0].indices, first[1].indices) and np.array_equal(
        first[0].targets, first[1].targets
    )
    assert np.array_equal(second[0].indices, second[1].indices)
    assert not np.array_equal(first[0].indices, second[0].indices)  # each seed holds out its own samples
    assert not np.array_equal(first[0].probs, first[1].probs)  # the losses trained different models


def _check_board(client: Client, sweep: Sweep, jobs: list[Job], board: dict[str, Any]) -> None:
    test_of = {j.id: j.best_metrics["test"] for j in jobs if j.best_metrics}
    assert (board["split"], board["metric"], board["complete"]) == ("test", "map", True)
    assert len(board["rows"]) == 2
    means = [row["mean"] for row in board["rows"]]
    assert means == sorted(means, reverse=True)
    for row in board["rows"]:
        assert row["n"] == 2 and [p["seed"] for p in row["per_seed"]] == [0, 1]
        assert row["ci95"][0] <= row["mean"] <= row["ci95"][1]
        for point in row["per_seed"]:
            assert point["value"] == point["map"] == test_of[point["job_id"]]["map"]
    assert "2000 resamples" in board["method"]
    if board["verdict"] == "winner":
        lo, hi = board["winner"]["delta_ci95"]
        assert lo > 0 and board["winner"]["model_id"] and sweep.winner is not None
        assert sweep.winner.model_id == board["winner"]["model_id"]
        assert client.models.predict(board["winner"]["model_id"], ["a red cat"])[0].scores
    else:
        assert board["verdict"] == "no_clear_winner" and board["winner"] is None and sweep.winner is None
        lo, hi = board["comparison"]["delta_ci95"]
        assert lo <= 0 <= hi


def test_candidates_parse_from_the_command_line() -> None:
    assert parse_candidate("bce") == {"name": "bce"}
    assert parse_candidate("asl:gamma_neg=2,clip=0.1") == {"name": "asl", "gamma_neg": 2.0, "clip": 0.1}
    assert parse_candidate("focal:detach_focal_weight=false") == {
        "name": "focal",
        "detach_focal_weight": False,
    }


def test_the_cli_creates_watches_lists_and_cancels_sweeps(
    embedded: LiveServer, dataset: Dataset, tiny_bert: Path
) -> None:
    cli = CliRunner(env={"APLSERVE_URL": embedded.url, "APLSERVE_API_KEY": embedded.key, "COLUMNS": "200"})
    common = ["--dataset", dataset.id[:8], "--model", f"hf:{tiny_bert}", "--epochs", "1", "--batch-size", "8",
              "--lr", "0.003", "--max-length", "16"]  # fmt: skip
    two = ["-c", "bce", "-c", "asl:gamma_neg=2", "--seed", "3"]
    watched = cli.invoke(app, ["sweeps", "create", *common, *two, "--watch"])
    assert watched.exit_code == 0, watched.output
    assert "started sweep" in watched.stdout and "succeeded" in watched.stdout
    assert "mean map" in watched.stdout and "95% interval" in watched.stdout
    assert "asl(gamma_neg=2)" in watched.stdout
    assert "winner" in watched.stdout or "no clear winner" in watched.stdout  # the verdict in words
    assert "sweep " in watched.stderr  # the progress display goes to stderr
    listed = json.loads(cli.invoke(app, ["sweeps", "list", "--json"]).stdout)
    sweep_id = listed[0]["id"]
    assert listed[0]["status"] == "succeeded" and listed[0]["progress"]["total"] == 2
    assert sweep_id[:8] in cli.invoke(app, ["sweeps", "list"]).stdout
    assert sweep_id in cli.invoke(app, ["sweeps", "list", "--wide"]).stdout
    assert "jobs: 2 (0 queued" in cli.invoke(app, ["sweeps", "get", sweep_id[:8]]).stdout  # a prefix will do
    board = json.loads(cli.invoke(app, ["sweeps", "leaderboard", sweep_id[:6], "--json"]).stdout)
    assert board["sweep_id"] == sweep_id and board["verdict"] in ("winner", "no_clear_winner")

    queued = json.loads(
        cli.invoke(app, ["sweeps", "create", *common, "--seed", "0", "--seed", "1", "--json"]).stdout
    )
    assert len(queued["job_ids"]) == 8  # the four presets by default
    cancelled = cli.invoke(app, ["sweeps", "cancel", queued["id"], "--json"])
    assert cancelled.exit_code == 0 and json.loads(cancelled.stdout)["cancel_requested"] is True
    with Client(embedded.url, embedded.key) as client:
        assert client.sweeps.wait(queued["id"], timeout=120, poll_interval=0.5).status == "cancelled"
    again = cli.invoke(app, ["sweeps", "cancel", queued["id"]])
    assert again.exit_code == 2 and "sweep_finished" in again.stderr  # a user error (exit 2)
    refused = cli.invoke(app, ["sweeps", "create", *common, "-c", "nope"])
    assert refused.exit_code == 2 and "`--candidate` must be one of" in refused.stderr


def test_a_search_sweep_from_the_cli_and_its_trials_from_the_client(
    embedded: LiveServer, dataset: Dataset, tiny_bert: Path
) -> None:
    cli = CliRunner(env={"APLSERVE_URL": embedded.url, "APLSERVE_API_KEY": embedded.key, "COLUMNS": "200"})
    common = ["--dataset", dataset.id[:8], "--model", f"hf:{tiny_bert}", "--epochs", "2", "--batch-size", "8",
              "--max-length", "16", "-c", "bce", "-c", "apl", "--seed", "0"]  # fmt: skip
    watched = cli.invoke(app, ["sweeps", "create", *common, "--search-trials", "2", "--watch"])
    assert watched.exit_code == 0, watched.output
    assert (
        "search (replicate): 4/4 trials done" in watched.stdout and "chosen configuration" in watched.stdout
    )
    sweep_id = json.loads(cli.invoke(app, ["sweeps", "list", "--json"]).stdout)[0]["id"]
    with Client(embedded.url, embedded.key) as client:
        sweep = client.sweeps.get(sweep_id)
        trials = client.sweeps.trials(sweep_id)
        board = client.sweeps.leaderboard(sweep_id)
        roles = {job.id: job.role for job in client.sweeps.children(sweep_id)}
    assert sweep.phase == "replicate" and sweep.trials is not None and sweep.trials.total == 4
    assert [(t.candidate["name"], t.number) for t in trials] == [
        ("bce", 0),
        ("bce", 1),
        ("apl", 0),
        ("apl", 1),
    ]
    assert all(roles[t.job_id] == "trial" and t.state in ("complete", "pruned") for t in trials)
    for row in board.rows:  # the replicate scored on the test split carries its best trial's configuration
        best = max((t for t in trials if t.candidate == row.candidate and t.state == "complete"),
                   key=lambda t: t.value or 0.0)  # fmt: skip
        assert row.config == best.params and row.search_value == best.value
        assert all(roles[p.job_id] == "replicate" for p in row.per_seed)
    listed = cli.invoke(app, ["sweeps", "trials", sweep_id[:8]])
    assert listed.exit_code == 0 and listed.stdout.count("learning_rate=") == 4, listed.output


def test_an_ordinary_job_with_a_test_split_reports_its_test_scores(
    embedded: LiveServer, dataset: Dataset, tiny_bert: Path
) -> None:
    with Client(embedded.url, embedded.key) as client:
        job = client.jobs.create(
            dataset.id, f"hf:{tiny_bert}", hyperparameters=HYPERPARAMETERS | {"epochs": 1}, test_fraction=0.25
        )
        assert job.spec.model_dump()["test_fraction"] == 0.25 and job.sweep_id is None
        job = client.jobs.wait(job.id, timeout=SWEEP_TIMEOUT)
    assert job.status == "succeeded" and job.best_metrics and job.best_metrics["test"]["num_samples"] == 12
    cli = CliRunner(env={"APLSERVE_URL": embedded.url, "APLSERVE_API_KEY": embedded.key, "COLUMNS": "200"})
    shown = cli.invoke(app, ["jobs", "get", job.id])
    assert shown.exit_code == 0 and "test split (12 samples): map=" in shown.stdout
