"""An app per test on each backend: SQLite with the embedded broker, and PostgreSQL with Redis.

The schema comes from `alembic upgrade head`, once per session per backend: SQLite
tests copy a migrated template file, PostgreSQL tests share the session database and
truncate every table afterwards. Each test gets its own broker queue name.
"""

from __future__ import annotations

import io
import re
import shutil
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import text

from api.auth import create_api_key
from api.main import create_app
from core.broker import close_celery_apps
from core.db.migrate import upgrade_to_head
from core.db.models import Base
from core.db.session import dispose_engines, session_scope
from core.errors import problem_type
from core.settings import Settings
from tests.services import unique_name

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("sqlite-template")
    upgrade_to_head(Settings(data_dir=data_dir))
    return data_dir / "aplserve.db"


@pytest.fixture(scope="session")
def migrated_postgres_url(postgres_url: str) -> str:
    upgrade_to_head(Settings(database_url=postgres_url))
    return postgres_url


def _truncate_all(settings: Settings) -> None:
    tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
    with session_scope(settings) as session:
        session.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture(params=BACKENDS)
def settings(request: pytest.FixtureRequest, data_dir: Path, sqlite_template: Path) -> Iterator[Settings]:
    queue = unique_name("aplserve_test_q")
    if request.param == "sqlite":
        shutil.copyfile(sqlite_template, data_dir / "aplserve.db")
        current = Settings(data_dir=data_dir, queue_name=queue)
    else:
        database_url = request.getfixturevalue("migrated_postgres_url")
        redis_url = request.getfixturevalue("redis_url")
        current = Settings(
            data_dir=data_dir, database_url=database_url, broker_url=redis_url, queue_name=queue
        )
    try:
        yield current
    finally:
        close_celery_apps()
        if request.param == "postgres":
            _truncate_all(current)
            client = redis.Redis.from_url(current.resolved_broker_url)
            client.delete(queue)
            client.close()
        dispose_engines()


@pytest.fixture
def backend(settings: Settings) -> str:
    return "sqlite" if settings.database_url is None else "postgres"


#: Codes any route may answer with, whether or not it lists them (faults of the server itself).
UNDOCUMENTED_ANYWHERE = {"internal", "database_unavailable"}


def documented_problems(app: FastAPI) -> dict[tuple[str, str], dict[int, set[str]]]:
    """(path template, method) -> status -> the codes its OpenAPI entry documents."""
    documented: dict[tuple[str, str], dict[int, set[str]]] = {}
    for path, operations in app.openapi()["paths"].items():
        for method, operation in operations.items():
            statuses = documented.setdefault((path, method.upper()), {})
            for status, response in operation["responses"].items():
                examples = response.get("content", {}).get("application/problem+json", {}).get("examples", {})
                statuses[int(status)] = {example["value"]["code"] for example in examples.values()}
    return documented


def _template(path: str, templates: list[str]) -> str | None:
    """The OpenAPI path template a request path falls under (literal segments before parameters)."""
    matching = [t for t in templates if re.fullmatch(re.sub(r"\{[^/]+\}", "[^/]+", t), path)]
    return min(matching, key=lambda t: t.count("{"), default=None)


def check_documented(app: FastAPI) -> Callable[[httpx.Response], None]:
    """A response hook: every problem a route answers with must be in its OpenAPI entry."""
    documented = documented_problems(app)
    templates = sorted({path for path, _ in documented})

    def hook(response: httpx.Response) -> None:
        if not response.headers.get("content-type", "").startswith("application/problem+json"):
            return
        method = response.request.method
        path = _template(response.request.url.path, templates)
        if path is None or (path, method) not in documented:
            return  # no such route (404 or 405 from the router), or one outside the OpenAPI page
        response.read()
        code = response.json().get("code")
        listed = documented[(path, method)].get(response.status_code, set())
        assert code in listed | UNDOCUMENTED_ANYWHERE, (
            f"{method} {path} answered {response.status_code} {code}, which its OpenAPI entry does "
            f"not list ({sorted(listed)}): add it to the route's problem_responses"
        )

    return hook


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        test_client.event_hooks["response"].append(check_documented(app))
        yield test_client


def make_key(settings: Settings, owner: str) -> str:
    with session_scope(settings) as session:
        _, key = create_api_key(session, owner)
    return key


@pytest.fixture
def alice(settings: Settings) -> dict[str, str]:
    """Authorization headers of owner 'alice'."""
    return {"Authorization": f"Bearer {make_key(settings, 'alice')}"}


@pytest.fixture
def bob(settings: Settings) -> dict[str, str]:
    """Authorization headers of a second owner, 'bob'."""
    return {"Authorization": f"Bearer {make_key(settings, 'bob')}"}


# --- dataset files made in the test -------------------------------------------------------

TEXT_ROWS = [
    ("a sunny day at the beach", ["summer", "travel"]),
    ("snow on the mountain pass", ["winter", "travel"]),
    ("hot chocolate by the fire", ["winter"]),
    ("ice cream in the park", ["summer"]),
    ("a long flight to the coast", ["travel"]),
    ("skiing with friends", ["winter", "sport"]),
    ("surfing the morning waves", ["summer", "sport"]),
    ("a quiet evening at home", []),
    ("cycling across the valley", ["sport", "travel"]),
    ("building a snowman", ["winter"]),
    ("a picnic under the trees", ["summer"]),
    ("running a marathon in the heat", ["summer", "sport"]),
]


def csv_bytes(rows: list[tuple[str, list[str]]] = TEXT_ROWS) -> bytes:
    lines = ["text,labels"] + [f'"{text_}",{"|".join(labels)}' for text_, labels in rows]
    return ("\n".join(lines) + "\n").encode()


def jsonl_bytes(rows: list[tuple[str, list[str]]] = TEXT_ROWS) -> bytes:
    import json

    return "".join(json.dumps({"text": t, "labels": labels}) + "\n" for t, labels in rows).encode()


def zip_bytes(count: int = 12) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        rows = ["filename,labels"]
        for index in range(count):
            red, blue = index % 2 == 0, index % 3 == 0
            image = Image.new("RGB", (16, 16), (255 if red else 0, 0, 255 if blue else 0))
            png = io.BytesIO()
            image.save(png, format="PNG")
            name = f"img/{index:02d}.png"
            archive.writestr(name, png.getvalue())
            rows.append(f"{name},{'|'.join(label for label, on in (('red', red), ('blue', blue)) if on)}")
        archive.writestr("labels.csv", "\n".join(rows) + "\n")
    return buffer.getvalue()


@dataclass
class Uploader:
    client: TestClient

    def __call__(
        self,
        headers: dict[str, str],
        content: bytes | None = None,
        filename: str = "data.csv",
        name: str | None = None,
    ) -> Any:
        data = {"name": name} if name is not None else None
        return self.client.post(
            "/v1/datasets",
            headers=headers,
            files={
                "file": (
                    filename,
                    content if content is not None else csv_bytes(),
                    "application/octet-stream",
                )
            },
            data=data,
        )


@pytest.fixture
def upload(client: TestClient) -> Uploader:
    return Uploader(client)


@pytest.fixture
def text_dataset(upload: Uploader, alice: dict[str, str]) -> dict[str, Any]:
    response = upload(alice, name="seasons")
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


JobPoster = Callable[..., Any]


@pytest.fixture
def post_job(client: TestClient) -> JobPoster:
    """POST /v1/jobs with a text spec; keyword arguments override spec fields."""

    def _post(
        headers: dict[str, str], dataset_id: str, *, idempotency_key: str | None = None, **spec: Any
    ) -> Any:
        body = {"dataset_id": dataset_id, "base_model": "minilm-l6", **spec}
        extra = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else {}
        return client.post("/v1/jobs", json=body, headers=headers | extra)

    return _post


def assert_problem(response: Any, status: int, code: str) -> dict[str, Any]:
    """The response is problem+json with this status and code, and leaks no internals."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    assert body["type"] == problem_type(code)
    flat = response.text.lower()
    for leak in ("traceback", "select ", "insert ", "/tmp/", "/work/", "sqlalchemy", '.py"'):
        assert leak not in flat, f"{leak!r} leaked into {response.text}"
    return body
