"""The `aplserve` client commands against the live embedded server.

Commands run in process through Typer's CliRunner (the real command functions,
options and environment variables); one runs as the installed console script.
"""

from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from aplserve.cli import app
from aplserve.client import Client
from tests.client.conftest import LiveServer
from tests.client.processes import APLSERVE, base_env


@pytest.fixture
def cli(embedded: LiveServer) -> CliRunner:
    return CliRunner(env={"APLSERVE_URL": embedded.url, "APLSERVE_API_KEY": embedded.key, "COLUMNS": "200"})


def run(cli: CliRunner, *args: str, code: int = 0) -> Result:
    result = cli.invoke(app, list(args))
    assert result.exit_code == code, f"exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    return result


def as_json(result: Result) -> Any:
    return json.loads(result.stdout)


def test_text_workflow(cli: CliRunner, text_csv: Path, tiny_bert: Path) -> None:
    uploaded = run(cli, "datasets", "upload", str(text_csv), "--name", "keywords-cli")
    assert "48 text samples (csv), 3 labels" in uploaded.stdout
    assert "uploading keywords.csv" in uploaded.stderr  # the progress bar goes to stderr
    listed = as_json(run(cli, "datasets", "list", "--json"))
    dataset = next(d for d in listed if d["name"] == "keywords-cli")
    assert "keywords-cli" in run(cli, "datasets", "list").stdout

    created = as_json(
        run(
            cli,
            "jobs", "create",
            "--dataset", dataset["id"],
            "--model", f"hf:{tiny_bert}",
            "--loss", "apl",
            "--epochs", "2", "--batch-size", "8", "--lr", "0.001", "--seed", "7", "--max-length", "32",
            "--gamma-neg", "3", "--clip", "0.1",
            "--policy", "precision_at", "--target", "0.8", "--min-labels", "1",
            "--name", "keywords-apl", "--metadata", "experiment=cli", "--metadata", "by=test",
            "--json",
        )
    )  # fmt: skip
    assert created["status"] == "queued"
    assert created["spec"]["loss"] | {"gamma_neg": 3.0, "clip": 0.1} == created["spec"]["loss"]
    assert created["spec"]["loss"]["alpha2"] == 1.75  # the rest from the apl preset
    assert created["spec"]["hyperparameters"]["seed"] == 7
    assert created["spec"]["decision"] == {"policy": "precision_at", "target": 0.8, "min_labels": 1}
    assert (created["name"], created["metadata"]) == ("keywords-apl", {"experiment": "cli", "by": "test"})
    job_id = created["id"]

    watched = run(cli, "jobs", "watch", job_id[:8])  # the short id the list and the progress bar show
    assert f"job {job_id} 'keywords-apl': succeeded" in watched.stdout
    assert "metadata: experiment=cli, by=test" in watched.stdout
    assert "train loss" in watched.stdout and "mAP" in watched.stdout  # the metrics table
    assert f"job {job_id[:8]}" in watched.stderr  # the progress bar

    job = as_json(run(cli, "jobs", "get", job_id, "--json"))
    assert job["status"] == "succeeded" and job["attempts"] == 1
    assert [p["epoch"] for p in as_json(run(cli, "jobs", "metrics", job_id, "--json"))] == [1, 2]
    listed_jobs = run(cli, "jobs", "list", "--status", "succeeded").stdout
    assert job_id[:8] in listed_jobs and "keywords-apl" in listed_jobs and job_id not in listed_jobs
    wide = run(cli, "jobs", "list", "--wide").stdout
    assert job_id in wide and "experiment=cli, by=test" in wide
    assert job_id in {j["id"] for j in as_json(run(cli, "jobs", "list", "--json", "--all"))}

    history = run(cli, "jobs", "events", job_id[:8]).stdout.splitlines()
    # (message lines: what the job says besides, e.g. a linear baseline that beat it)
    assert [line.split()[2] for line in history if line.split()[2] != "message"] == [
        "status", "status", "epoch", "checkpoint", "epoch", "checkpoint", "status"
    ]  # fmt: skip
    assert "epoch 2/2: train loss" in history[4] and "samples/s" in history[4]
    assert history[-1].endswith(f"succeeded: model {job['model_id']} is ready")
    checkpoints = as_json(run(cli, "jobs", "checkpoints", job_id, "--json"))
    assert [(c["epoch"], c["on_disk"]) for c in checkpoints] == [(1, False), (2, False)]  # removed at the end
    assert [c["best"] for c in checkpoints].count(True) == 1

    models = as_json(run(cli, "models", "list", "--json"))
    assert job["model_id"] in {m["id"] for m in models}
    shown = run(cli, "models", "get", job["model_id"][:6]).stdout
    assert "threshold" in shown and "animal" in shown

    predicted = as_json(run(cli, "predict", job["model_id"], "a dog and a horse", "green cheese", "--json"))
    assert len(predicted) == 2 and all(set(p["scores"]) == {"animal", "color", "food"} for p in predicted)
    everything = as_json(
        run(cli, "predict", job["model_id"][:8], "a dog and a horse", "--threshold", "0", "--json")
    )
    assert set(everything[0]["labels"]) == {"animal", "color", "food"}  # threshold 0: all
    table = run(cli, "predict", job["model_id"][:8], "a dog and a horse", "--threshold", "0").stdout
    (row,) = [line for line in table.splitlines() if "a dog and a horse" in line]
    assert all(label in row for label in ("animal", "color", "food"))  # threshold 0: all
    forced = run(cli, "predict", job["model_id"], "a dog and a horse", "--threshold", "1").stdout
    (row,) = [line for line in forced.splitlines() if "a dog and a horse" in line]
    assert "*" in row and "added by min_labels" in forced  # the job's min_labels 1
    none = as_json(
        run(cli, "predict", job["model_id"], "x", "--threshold", "1", "--min-labels", "0", "--json")
    )
    # Threshold 1 returns only labels whose calibrated score is 1 (an isotonic map can reach it).
    assert all(none[0]["scores"][label] >= 1.0 for label in none[0]["labels"])
    assert none[0]["added_by_min_labels"] == []


def test_image_workflow_sends_existing_image_paths_as_images(
    cli: CliRunner, image_zip: Path, tmp_path: Path
) -> None:
    dataset = as_json(run(cli, "datasets", "upload", str(image_zip), "--json"))
    assert dataset["modality"] == "image" and dataset["labels"] == ["blue", "green", "red"]
    job = as_json(
        run(
            cli,
            "jobs", "create", "--dataset", dataset["id"], "--model", "mobilenetv2-100", "--loss", "asl",
            "--epochs", "1", "--batch-size", "8", "--image-size", "32", "--watch", "--json",
        )
    )  # fmt: skip
    assert job["status"] == "succeeded" and job["spec"]["loss"]["name"] == "asl"
    with zipfile.ZipFile(image_zip) as archive:
        names = [n for n in archive.namelist() if n.endswith(".png")][:2]
        archive.extractall(tmp_path, names)
    images = [str(tmp_path / name) for name in names]
    predicted = as_json(run(cli, "predict", job["model_id"], *images, "--json"))
    assert len(predicted) == 2 and all(set(p["scores"]) == {"blue", "green", "red"} for p in predicted)
    # An image name that is not a file is refused before anything is sent (a mistyped path)...
    refused = run(cli, "predict", job["model_id"], str(tmp_path / "missing.png"), code=2)
    assert refused.stderr.startswith("error: no image file") and "(file_not_found)" in refused.stderr
    # ...and sent as a text when asked, which this image model refuses.
    as_text = run(cli, "predict", job["model_id"], str(tmp_path / "missing.png"), "--text", code=2)
    assert as_text.stderr.startswith("error: ") and "(wrong_modality)" in as_text.stderr

    downloaded = run(cli, "models", "download", job["model_id"], "-o", str(tmp_path)).stdout.strip()
    assert Path(downloaded).parent == tmp_path and Path(downloaded).stat().st_size > 0

    assert (
        run(cli, "models", "delete", job["model_id"], "--yes").stdout.strip()
        == f"deleted model {job['model_id']}"
    )
    gone = run(cli, "models", "get", job["model_id"], code=2)
    assert gone.stderr.strip() == "error: model was not found (not_found)"
    assert as_json(run(cli, "jobs", "get", job["id"], "--json"))["model_id"] is None


def test_webhook_secret_is_the_clients(cli: CliRunner, embedded: LiveServer) -> None:
    secret = run(cli, "webhooks", "secret").stdout.strip().splitlines()[-1]
    with Client(embedded.url, embedded.key) as client:
        assert secret == client.webhooks.secret().secret
    rotated = as_json(run(cli, "webhooks", "secret", "--rotate", "--json"))["secret"]
    assert rotated != secret and rotated.startswith("whsec_")


def one_line(result: Result) -> str:
    """A refused command prints exactly one line on stderr, never a traceback."""
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]  # not progress bars
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def test_errors_are_one_line_and_exit_2_when_refused(cli: CliRunner, embedded: LiveServer) -> None:
    missing = run(cli, "jobs", "get", "no-such-job", code=2)
    assert one_line(missing) == "error: job was not found (not_found)"
    no_key = CliRunner(env={"APLSERVE_URL": embedded.url, "APLSERVE_API_KEY": None})
    unauthorized = no_key.invoke(app, ["datasets", "list"])
    assert unauthorized.exit_code == 2 and "(unauthorized)" in one_line(unauthorized)
    assert "APLSERVE_API_KEY" in unauthorized.stderr
    invalid = run(cli, "jobs", "create", "--dataset", "x", "--model", "minilm-l6", "--clip", "2", code=2)
    assert one_line(invalid) == "error: `--clip` must be less than 1 (got 2.0) (validation_error)"
    unknown = run(cli, "jobs", "create", "--dataset", "x", "--model", "timm:resnet999", code=2)
    assert one_line(unknown).startswith("error: timm has no architecture named 'resnet999'")
    unreachable = CliRunner(env={"APLSERVE_URL": "http://127.0.0.1:9", "APLSERVE_API_KEY": "k"})
    down = unreachable.invoke(app, ["jobs", "list"])
    assert down.exit_code == 1 and "(unreachable)" in one_line(down) and "APLSERVE_URL" in one_line(down)


def test_the_console_script(embedded: LiveServer) -> None:
    env = base_env(APLSERVE_URL=embedded.url, APLSERVE_API_KEY=embedded.other_key)
    done = subprocess.run(
        [APLSERVE, "jobs", "list", "--json"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []  # bob sees none of alice's jobs
