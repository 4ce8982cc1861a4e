"""The CLI a newcomer meets: tables that fit 80 columns, short ids everywhere, one-line errors
(exit 2) for what the user typed, confirmation before deletes, and a Client that reads
APLSERVE_URL / APLSERVE_API_KEY. Against the live embedded server of tests/client/conftest.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import select
from typer.testing import CliRunner, Result

from aplserve.cli import app
from aplserve.client import Client
from aplserve.commands import common
from core.db.models import Dataset, Owner
from core.db.session import dispose_engines, session_scope
from core.settings import Settings
from tests.client.conftest import LiveServer
from tests.client.test_live_cli import as_json, one_line, run


@pytest.fixture
def cli80(embedded: LiveServer) -> CliRunner:
    return CliRunner(env={"APLSERVE_URL": embedded.url, "APLSERVE_API_KEY": embedded.key, "COLUMNS": "80"})


def _dataset(embedded: LiveServer, cli80: CliRunner, text_csv: Path, name: str) -> dict[str, Any]:
    dataset: dict[str, Any] = as_json(
        run(cli80, "datasets", "upload", str(text_csv), "--name", name, "--json")
    )
    return dataset


def test_lists_fit_80_columns_with_short_ids_that_every_command_takes(
    cli80: CliRunner, embedded: LiveServer, text_csv: Path
) -> None:
    dataset = _dataset(embedded, cli80, text_csv, "a-dataset-with-a-rather-long-name-for-80-columns")
    job = as_json(
        run(
            cli80, "jobs", "create", "--dataset", dataset["id"][:8], "--model", "minilm-l6", "--epochs", "1",
            "--name", "an-80-column-job", "--metadata", "team=newcomers", "--json",
        )
    )  # fmt: skip
    quiet = run(cli80, "jobs", "create", "--dataset", dataset["id"][:8], "--model", "minilm-l6", "-q").stdout
    assert len(quiet.strip()) == 36 and quiet.count("\n") == 1
    for job_id in (job["id"], quiet.strip()):  # the rows are what matters here, not the training
        run(cli80, "jobs", "cancel", job_id[:8])
        run(cli80, "jobs", "watch", job_id[:8], "-q", code=1)  # a claimed job stops within one step
    for command in (["datasets", "list"], ["jobs", "list"], ["models", "list"]):
        output = run(cli80, *command).stdout
        lines = output.splitlines()
        assert all(len(line) <= 80 for line in lines), "\n".join(lines)
        header = lines[0].split()
        assert header[0] == "id" and "created" in header, lines[0]  # no column squeezed to nothing
    jobs_table = run(cli80, "jobs", "list").stdout
    assert job["id"][:8] in jobs_table and "cancelled" in jobs_table and "minilm-l6" in jobs_table
    assert job["id"] not in jobs_table
    assert job["id"] in run(cli80, "jobs", "list", "--wide").stdout
    shown = run(cli80, "jobs", "get", job["id"][:8]).stdout
    assert f"job {job['id']} 'an-80-column-job': cancelled" in shown and "team=newcomers" in shown
    assert dataset["id"] in run(cli80, "datasets", "get", dataset["id"][:6]).stdout
    events = [
        _json_line(line) for line in run(cli80, "jobs", "events", job["id"][:8], "--json").stdout.splitlines()
    ]
    assert events[0]["message"].startswith("queued") and events[-1]["message"].startswith("cancelled")


def _json_line(line: str) -> dict[str, Any]:
    import json

    parsed: dict[str, Any] = json.loads(line)
    return parsed


def test_short_ids_that_match_several_or_are_too_short_are_refused(
    cli80: CliRunner, embedded: LiveServer
) -> None:
    settings = Settings(data_dir=embedded.data_dir)
    ids = ["abcdef01-0000-4000-8000-000000000001", "abcdef02-0000-4000-8000-000000000002"]
    with session_scope(settings) as session:
        owner = session.scalars(select(Owner).where(Owner.name == "alice")).one()
        for index, dataset_id in enumerate(ids):
            session.add(
                Dataset(
                    id=dataset_id, owner_id=owner.id, name=f"twin-{index}", modality="text", format="csv",
                    num_samples=12, labels=["a", "b"], label_counts={"a": 6, "b": 6}, label_cardinality=1.0,
                    size_bytes=1, sha256="0" * 64, warnings=[],
                )
            )  # fmt: skip
    dispose_engines()
    try:
        ambiguous = run(cli80, "datasets", "get", "abcdef", code=2)
        line = one_line(ambiguous)
        assert line.startswith("error: 'abcdef' is the start of 2 dataset ids: ") and line.endswith(
            "(ambiguous_id)"
        )
        assert ids[0] in line and ids[1] in line
        assert "twin-1" in run(cli80, "datasets", "get", "abcdef02").stdout
        assert one_line(run(cli80, "datasets", "get", "abc", code=2)).endswith("(id_too_short)")
        assert (
            one_line(run(cli80, "jobs", "get", "abcdef", code=2))
            == "error: no job id starts with 'abcdef' (not_found)"
        )
    finally:
        for dataset_id in ids:
            run(cli80, "datasets", "delete", dataset_id, "--yes")


def test_deletes_ask_first_and_refuse_without_a_terminal(
    cli80: CliRunner, embedded: LiveServer, text_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset = _dataset(embedded, cli80, text_csv, "to-delete")
    refused = run(cli80, "datasets", "delete", dataset["id"][:8], code=2)
    assert one_line(refused) == (
        "error: not deleting without confirmation: stdin is not a terminal; pass --yes (confirmation_needed)"
    )
    monkeypatch.setattr(common, "interactive", lambda: True)
    declined = cli80.invoke(app, ["datasets", "delete", dataset["id"][:8]], input="n\n")
    assert (
        declined.exit_code == 2
        and "Delete dataset" in declined.stdout
        and "(cancelled_by_user)" in declined.stderr
    )
    assert run(cli80, "datasets", "get", dataset["id"]).exit_code == 0  # still there
    accepted = cli80.invoke(app, ["datasets", "delete", dataset["id"][:8]], input="y\n")
    assert accepted.exit_code == 0 and f"deleted dataset {dataset['id']}" in accepted.stdout
    run(cli80, "datasets", "get", dataset["id"], code=2)


def test_predict_refuses_texts_mixed_with_images_in_one_line(cli80: CliRunner, tmp_path: Path) -> None:
    image = tmp_path / "some-image.png"
    Image.new("RGB", (8, 8)).save(image)
    mixed: Result = cli80.invoke(app, ["predict", "0123456789ab", str(image), "a text"])
    assert mixed.exit_code == 2
    assert one_line(mixed).startswith("error: give either texts or image files, not both: ")
    assert one_line(mixed).endswith("(mixed_inputs)")


def test_upload_options_and_dedupe_from_the_cli(
    cli80: CliRunner, embedded: LiveServer, tmp_path: Path
) -> None:
    rows = [f'"title {i}","{"a,b" if i % 2 else "b"}"' for i in range(12)]
    path = tmp_path / "tags.csv"
    path.write_text("title,tags\n" + "\n".join(rows) + "\n")
    refused = run(cli80, "datasets", "upload", str(path), code=2)
    line = one_line(refused)
    assert line.endswith("(invalid_csv_header)") and "pass --text-column" in line  # the option, not the field
    options = ["--text-column", "title", "--labels-column", "tags", "--label-separator", ","]
    first = as_json(run(cli80, "datasets", "upload", str(path), *options, "--json"))
    assert first["labels"] == ["a", "b"] and first["upload_options"]["label_separator"] == ","
    again = as_json(run(cli80, "datasets", "upload", str(path), *options, "--dedupe", "--json"))
    assert again["id"] == first["id"]
    quiet = run(cli80, "datasets", "upload", str(path), *options, "--dedupe", "-q")
    assert quiet.stdout == f"{first['id']}\n" and quiet.stderr == ""  # -q: the id alone, no progress bar
    copy = run(cli80, "datasets", "upload", str(path), *options).stdout
    assert f"identical to dataset {first['id']}" in " ".join(copy.split())
    assert "read with text_column='title'" in copy


def test_the_client_reads_the_url_and_key_from_the_environment(
    embedded: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APLSERVE_URL", embedded.url)
    monkeypatch.setenv("APLSERVE_API_KEY", embedded.key)
    with Client() as client:
        assert client.base_url == embedded.url
        assert isinstance(client.datasets.list().items, list)  # authenticated as alice
    monkeypatch.setenv("APLSERVE_API_KEY", embedded.other_key)
    with Client() as client, Client(embedded.url, embedded.key) as explicit:
        mine = {d.id for d in explicit.datasets.list().items}
        assert mine and not mine & {d.id for d in client.datasets.list().items}  # bob sees none of them
