"""Upload options (column names, label separator), the suspicious-separator guard and re-upload
detection: through the HTTP route on SQLite and PostgreSQL, and in the ingest readers."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.ingest import UploadOptions, ingest_dataset
from core.errors import AppError
from tests.api.conftest import assert_problem

GENRES = [
    ("Toy Story (1995)", "animation,comedy"),
    ("Heat (1995)", "action,crime"),
    ("Clueless (1995)", "comedy"),
    ("Casino (1995)", "crime,drama"),
    ("Balto (1995)", "animation"),
    ("GoldenEye (1995)", "action"),
    ("Sabrina (1995)", "comedy,drama"),
    ("Nixon (1995)", "drama"),
    ("Jumanji (1995)", "action,comedy"),
    ("Sudden Death (1995)", "action"),
    ("Dracula (1995)", "comedy"),
    ("Othello (1995)", "drama"),
]


def comma_csv(header: str = "title,tags") -> bytes:
    lines = [header, *(f'"{title}","{labels}"' for title, labels in GENRES)]
    return ("\n".join(lines) + "\n").encode()


def post(
    client: TestClient,
    headers: dict[str, str],
    content: bytes,
    filename: str = "movies.csv",
    query: str = "",
    **fields: str,
) -> Any:
    return client.post(
        f"/v1/datasets{query}",
        headers=headers,
        files={"file": (filename, content, "application/octet-stream")},
        data=fields or None,
    )


def test_comma_separated_labels_in_a_quoted_field_are_refused_naming_line_and_field(
    client: TestClient, alice: dict[str, str]
) -> None:
    body = assert_problem(post(client, alice, comma_csv("text,labels")), 422, "suspicious_label_separator")
    assert body["detail"].startswith("line 2: the 'labels' cell 'animation,comedy' contains ','")
    assert "label_separator=','" in body["detail"]
    assert client.get("/v1/datasets", headers=alice).json()["items"] == []


def test_column_names_and_separator_are_upload_fields(client: TestClient, alice: dict[str, str]) -> None:
    response = post(
        client, alice, comma_csv(), text_column="title", labels_column="tags", label_separator=","
    )
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert dataset["labels"] == ["action", "animation", "comedy", "crime", "drama"]
    assert dataset["label_counts"]["comedy"] == 5 and dataset["num_samples"] == 12
    assert abs(dataset["label_cardinality"] - 17 / 12) < 1e-6
    assert dataset["upload_options"] == {
        "text_column": "title",
        "labels_column": "tags",
        "label_separator": ",",
    }


def test_a_labels_column_named_otherwise_is_refused_with_the_field_to_set(
    client: TestClient, alice: dict[str, str]
) -> None:
    body = assert_problem(
        post(client, alice, comma_csv("text,tags"), label_separator=","), 422, "invalid_csv_header"
    )
    assert "column 'labels': the header lacks it (found 'text', 'tags')" in body["detail"]
    assert "labels_column" in body["detail"]


def test_naming_the_default_separator_keeps_commas_inside_label_names(
    client: TestClient, alice: dict[str, str]
) -> None:
    rows = [
        ("a song", "rock, paper|jazz"),
        ("another", "jazz"),
        *[(f"t{i}", "blues|jazz") for i in range(10)],
    ]
    content = ("text,labels\n" + "".join(f'"{t}","{labels}"\n' for t, labels in rows)).encode()
    assert_problem(post(client, alice, content), 422, "suspicious_label_separator")
    accepted = post(client, alice, content, label_separator="|")
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["labels"] == ["blues", "jazz", "rock, paper"]


def test_quoting_advice_only_where_quoting_is_the_fix(client: TestClient, alice: dict[str, str]) -> None:
    extra = b"text,labels\nHello, world,greeting\n" + b"".join(b"t%d,a|b\n" % i for i in range(11))
    more = assert_problem(post(client, alice, extra), 422, "invalid_csv")["detail"]
    assert more.startswith("line 2 has 3 fields but the header has 2") and "Quote such fields" in more
    missing = b"text,labels,source\nhello,greeting\n" + b"".join(b"t%d,a|b,x\n" % i for i in range(11))
    fewer = assert_problem(post(client, alice, missing), 422, "invalid_csv")["detail"]
    assert "a field is missing" in fewer and "quote" not in fewer.lower()


def test_jsonl_keys_follow_the_column_fields(client: TestClient, alice: dict[str, str]) -> None:
    lines = [json.dumps({"title": t, "genres": labels.split(",")}) for t, labels in GENRES]
    content = ("\n".join(lines) + "\n").encode()
    refused = assert_problem(post(client, alice, content, filename="m.jsonl"), 422, "invalid_json")
    assert "its keys are 'title', 'genres'" in refused["detail"] and "text_column" in refused["detail"]
    response = post(client, alice, content, filename="m.jsonl", text_column="title", labels_column="genres")
    assert response.status_code == 201, response.text
    assert response.json()["labels"] == ["action", "animation", "comedy", "crime", "drama"]


def png_bytes(value: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (value * 20, 0, 0)).save(out, format="PNG")
    return out.getvalue()


def _image_zip(header: str, separator: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        rows = [header]
        for i in range(12):
            archive.writestr(f"img/{i}.png", png_bytes(i))
            rows.append(f"img/{i}.png,{separator.join(['red', 'blue'][: 1 + i % 2])}")
        archive.writestr("labels.csv", "\n".join(rows) + "\n")
    return buffer.getvalue()


def test_zip_labels_file_takes_filename_column_and_separator(
    client: TestClient, alice: dict[str, str]
) -> None:
    content = _image_zip("path,labels", ";")
    assert_problem(post(client, alice, content, filename="c.zip"), 422, "invalid_csv_header")
    refused = post(client, alice, content, filename="c.zip", filename_column="path")
    assert_problem(refused, 422, "suspicious_label_separator")
    assert refused.json()["detail"].startswith("labels.csv line 3: the 'labels' cell 'red;blue'")
    response = post(client, alice, content, filename="c.zip", filename_column="path", label_separator=";")
    assert response.status_code == 201, response.text
    assert response.json()["label_counts"] == {"blue": 6, "red": 12}


def test_options_that_do_not_apply_to_the_file_are_refused(client: TestClient, alice: dict[str, str]) -> None:
    wrong = assert_problem(
        post(client, alice, comma_csv(), filename_column="path"), 422, "invalid_upload_option"
    )
    assert wrong["errors"] == [
        {"loc": ["body", "filename_column"], "msg": "applies to a .zip of images only"}
    ]
    content = _image_zip("filename,labels", "|")
    assert_problem(
        post(client, alice, content, filename="c.zip", text_column="t"), 422, "invalid_upload_option"
    )
    assert_problem(post(client, alice, comma_csv(), label_separator="a" * 9), 422, "invalid_upload_option")


def test_identical_bytes_warn_or_return_the_existing_dataset(
    client: TestClient, alice: dict[str, str]
) -> None:
    fields = {"text_column": "title", "labels_column": "tags", "label_separator": ","}
    first = post(client, alice, comma_csv(), **fields).json()
    assert not any("identical" in warning for warning in first["warnings"])
    second = post(client, alice, comma_csv(), **fields)
    assert second.status_code == 201 and second.json()["id"] != first["id"]
    (warning,) = [w for w in second.json()["warnings"] if "identical" in w]
    assert warning.startswith(f"This file is identical to dataset {first['id']} 'movies', uploaded ")
    assert "?dedupe=true" in warning

    reused = post(client, alice, comma_csv(), query="?dedupe=true", **fields)
    assert reused.status_code == 200 and reused.json()["id"] == first["id"]
    assert reused.headers["location"] == f"/v1/datasets/{first['id']}"
    assert len(client.get("/v1/datasets", headers=alice).json()["items"]) == 2  # nothing new

    # The same bytes read another way are another dataset, even with dedupe.
    other = post(client, alice, comma_csv(), query="?dedupe=true", text_column="tags", labels_column="title")
    assert other.status_code == 201 and other.json()["id"] != first["id"]
    assert any("read with other upload options" in w for w in other.json()["warnings"])


def test_dedupe_is_per_owner(client: TestClient, alice: dict[str, str], bob: dict[str, str]) -> None:
    fields = {"text_column": "title", "labels_column": "tags", "label_separator": ","}
    mine = post(client, alice, comma_csv(), **fields).json()
    theirs = post(client, bob, comma_csv(), query="?dedupe=true", **fields)
    assert theirs.status_code == 201 and theirs.json()["id"] != mine["id"]
    assert not any("identical" in warning for warning in theirs.json()["warnings"])


# --- the readers themselves ---------------------------------------------------------------------


def test_readers_return_samples_under_the_roles_names(tmp_path: Path) -> None:
    upload = tmp_path / "in.csv"
    upload.write_bytes(comma_csv("ID, Tags ,Title"))  # columns matched case- and space-insensitively
    upload.write_bytes(upload.read_bytes().replace(b'"Toy', b'1,"Toy', 1))
    options = UploadOptions.from_fields(
        {"text_column": "title", "labels_column": "tags", "label_separator": ","}
    )
    with pytest.raises(AppError) as refused:
        ingest_dataset(upload, "in.csv", tmp_path / "ds", options=options)
    assert refused.value.code == "invalid_csv"  # the other rows lack the ID field
    rows = ["ID,Tags,Title", *(f'{i},"{labels}","{title}"' for i, (title, labels) in enumerate(GENRES))]
    upload.write_text("\n".join(rows) + "\n")
    ingest_dataset(upload, "in.csv", tmp_path / "ds", options=options)
    first = json.loads((tmp_path / "ds" / "samples.jsonl").read_text().splitlines()[0])
    assert first == {"text": "Toy Story (1995)", "labels": ["animation", "comedy"]}


def test_empty_option_fields_count_as_not_given() -> None:
    options = UploadOptions.from_fields({"text_column": " ", "label_separator": ""})
    assert options == UploadOptions() and options.as_fields() == {}
    assert options.column("labels") == "labels" and options.separator == "|"


def _delimited(delimiter: str, header: tuple[str, str] = ("text", "labels")) -> bytes:
    """The genres as Excel writes them where the decimal mark is a comma: `;` between fields."""
    lines = [
        delimiter.join(header),
        *(f"{title}{delimiter}{labels.replace(',', '|')}" for title, labels in GENRES),
    ]
    return ("\n".join(lines) + "\n").encode()


@pytest.mark.parametrize("delimiter", [";", "\t"])
def test_a_semicolon_or_tab_delimited_csv_is_read_from_its_header(
    client: TestClient, alice: dict[str, str], delimiter: str
) -> None:
    response = post(client, alice, _delimited(delimiter))
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert dataset["num_samples"] == 12 and dataset["label_counts"]["comedy"] == 5
    assert "upload_options" not in dataset or "delimiter" not in (dataset["upload_options"] or {})


def test_the_delimiter_field_overrides_sniffing_and_is_checked(
    client: TestClient, alice: dict[str, str]
) -> None:
    named = post(client, alice, _delimited(";"), delimiter=";")
    assert named.status_code == 201, named.text
    assert named.json()["upload_options"] == {"delimiter": ";"}
    tab = post(client, alice, _delimited("\t"), filename="tab.csv", delimiter="tab")
    assert tab.status_code == 201 and tab.json()["upload_options"] == {"delimiter": "tab"}
    wrong = assert_problem(post(client, alice, comma_csv(), delimiter="::"), 422, "invalid_upload_option")
    assert wrong["errors"][0]["loc"] == ["body", "delimiter"]
    mismatch = assert_problem(post(client, alice, _delimited(";"), delimiter=","), 422, "invalid_csv_header")
    assert "text;labels" in mismatch["detail"]


def test_a_zip_labels_file_may_be_semicolon_delimited(client: TestClient, alice: dict[str, str]) -> None:
    content = _image_zip("filename,labels", "|")
    with zipfile.ZipFile(io.BytesIO(content)) as original:
        members = {name: original.read(name) for name in original.namelist()}
    members["labels.csv"] = members["labels.csv"].replace(b",", b";")
    rewritten = io.BytesIO()
    with zipfile.ZipFile(rewritten, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    response = post(client, alice, rewritten.getvalue(), filename="semi.zip")
    assert response.status_code == 201, response.text
    assert response.json()["label_counts"] == {"blue": 6, "red": 12}
