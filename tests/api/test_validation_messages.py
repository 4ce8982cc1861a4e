"""422 answers speak the user's words: the field, the shape it takes, an example, the near miss."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from api.serving.inputs import Limits, parse_json
from core.errors import AppError
from core.settings import Settings
from tests.api.conftest import JobPoster, assert_problem


@pytest.mark.parametrize(
    ("spec", "loc", "words"),
    [
        ({"loss": "apl"}, ["body", "loss"], ["`loss` must be an object", '"loss": {"name": "apl"}']),
        (
            {"hyperparameters": {"epoch": 3}},
            ["body", "hyperparameters", "epoch"],
            ["`hyperparameters` takes no field 'epoch'", "did you mean 'epochs'?"],
        ),
        ({"lose": {"name": "apl"}}, ["body", "lose"], ["takes no field 'lose'", "did you mean 'loss'?"]),
        (
            {"loss": {"name": "apll"}},
            ["body", "loss", "name"],
            ["`loss.name` must be one of", '(got "apll")', "did you mean 'apl'?"],
        ),
        (
            {"loss": {"name": "apl", "clip": 1.5}},
            ["body", "loss", "clip"],
            ["`loss.clip` must be less than 1 (got 1.5)"],
        ),
        (
            {"hyperparameters": {"epochs": "three"}},
            ["body", "hyperparameters", "epochs"],
            ['`hyperparameters.epochs` must be a whole number (got "three")'],
        ),
    ],
)
def test_job_spec_errors_name_the_field_and_the_shape(
    alice: dict[str, str],
    text_dataset: dict[str, Any],
    post_job: JobPoster,
    spec: dict[str, Any],
    loc: list[str],
    words: list[str],
) -> None:
    body = assert_problem(post_job(alice, text_dataset["id"], **spec), 422, "validation_error")
    assert body["errors"][0]["loc"] == loc
    for phrase in words:
        assert phrase in body["detail"], body["detail"]
        assert phrase in body["errors"][0]["msg"]
    assert "Input should be" not in body["detail"] and "LossSpec" not in body["detail"]


def test_a_missing_field_is_named_and_several_problems_are_counted(
    client: Any, alice: dict[str, str]
) -> None:
    response = client.post("/v1/jobs", headers=alice, json={"loss": {"name": "apl", "clip": 2}})
    body = assert_problem(response, 422, "validation_error")
    messages = [error["msg"] for error in body["errors"]]
    assert "`dataset_id` is required" in messages
    assert "`base_model` is required" in messages
    assert body["detail"].endswith(f"(and {len(messages) - 1} more problems)")


def test_predict_bounds_carry_no_union_member_tags(tmp_path: Path) -> None:
    limits = Limits.from_settings(Settings(data_dir=tmp_path))
    with pytest.raises(AppError) as raised:
        parse_json(b'{"inputs": ["a film"], "threshold": 2}', "text", limits)
    error = raised.value
    assert error.status == 422 and error.code == "validation_error"
    assert error.errors is not None
    assert error.errors[0]["loc"] == ["body", "threshold"]
    assert error.detail == "`threshold` must be at most 1 (got 2)"
    assert "constrained" not in str(error.errors)


def test_a_problems_type_resolves_to_its_page_on_the_same_server(client: Any, alice: dict[str, str]) -> None:
    body = assert_problem(client.get("/v1/jobs/nope", headers=alice), 404, "not_found")
    assert body["type"] == "/problems/not-found"
    page = client.get(body["type"])
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<code>not_found</code>" in page.text and "HTTP 404" in page.text
    index = client.get("/problems")
    assert index.status_code == 200 and 'href="/problems/storage-full"' in index.text
    # A failed job's code has its page too; an unknown one is a 404 problem.
    assert client.get("/problems/worker-lost").status_code == 200
    assert_problem(client.get("/problems/no-such-code"), 404, "not_found")
