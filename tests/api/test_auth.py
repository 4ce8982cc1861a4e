"""Bearer keys: 401 problems, hashing at rest, the CLI, owners and disabled auth."""

from __future__ import annotations

import hashlib

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from api.main import create_app
from api.state import app_state
from aplserve.cli import app as cli
from core.db.models import ApiKey, Owner, utcnow
from core.db.session import session_scope
from core.settings import Settings
from tests.api.conftest import assert_problem, make_key

V1_ROUTES = [
    ("get", "/v1/datasets"),
    ("post", "/v1/datasets"),
    ("get", "/v1/datasets/x"),
    ("delete", "/v1/datasets/x"),
    ("post", "/v1/jobs"),
    ("get", "/v1/jobs"),
    ("get", "/v1/jobs/x"),
    ("post", "/v1/jobs/x/cancel"),
    ("get", "/v1/jobs/x/metrics"),
    ("get", "/v1/jobs/x/events"),
    ("get", "/v1/base-models"),
]


def test_every_v1_route_needs_a_key(client: TestClient) -> None:
    for method, path in V1_ROUTES:
        response = client.request(method, path)
        assert_problem(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer", path


@pytest.mark.parametrize(
    "header",
    [
        "Bearer aplsk_0000000000000000_not-a-real-secret",
        "Bearer not-even-the-format",
        "Basic dXNlcjpwYXNz",
        "Bearer ",
    ],
)
def test_a_wrong_key_is_401(client: TestClient, alice: dict[str, str], header: str) -> None:
    response = client.get("/v1/datasets", headers={"Authorization": header})
    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_a_key_with_a_changed_secret_is_401(client: TestClient, alice: dict[str, str]) -> None:
    good = alice["Authorization"]
    assert client.get("/v1/datasets", headers=alice).status_code == 200
    tampered = good[:-1] + ("A" if good[-1] != "A" else "B")
    assert_problem(client.get("/v1/datasets", headers={"Authorization": tampered}), 401, "unauthorized")


def test_keys_are_stored_as_sha256_only(settings: Settings) -> None:
    key = make_key(settings, "carol")
    with session_scope(settings) as session:
        stored = session.scalars(select(ApiKey)).all()
        assert [row.key_hash for row in stored] == [hashlib.sha256(key.encode()).hexdigest()]
        assert all(key.split("_", 2)[2] not in (row.key_hash + row.key_id) for row in stored)


def test_cli_creates_a_key_that_the_api_accepts(
    settings: Settings, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APLSERVE_DATA_DIR", str(settings.data_dir))
    if settings.database_url:
        monkeypatch.setenv("APLSERVE_DATABASE_URL", settings.database_url)
    from core.settings import get_settings

    get_settings.cache_clear()
    try:
        first = CliRunner().invoke(cli, ["keys", "create", "--name", "dora"])
        second = CliRunner().invoke(cli, ["keys", "create", "--name", "dora"])
    finally:
        get_settings.cache_clear()
    assert first.exit_code == 0, first.output
    key = first.stdout.strip().splitlines()[-1]
    other = second.stdout.strip().splitlines()[-1]
    assert key.startswith("aplsk_") and " " not in key and key != other
    assert client.get("/v1/datasets", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert client.get("/v1/datasets", headers={"Authorization": f"Bearer {other}"}).status_code == 200
    with session_scope(settings) as session:
        assert session.scalars(select(Owner.name).where(Owner.name == "dora")).all() == ["dora"]


def test_disabled_auth_uses_the_default_owner(settings: Settings) -> None:
    open_settings = settings.model_copy(update={"auth_enabled": False})
    with TestClient(create_app(open_settings)) as client:
        created = client.post(
            "/v1/datasets",
            files={"file": ("d.csv", b"text,labels\n" + b"".join(b"t%d,a|b\n" % i for i in range(10)))},
        )
        assert created.status_code == 201, created.text
        listed = client.get("/v1/datasets").json()["items"]
    assert [item["id"] for item in listed] == [created.json()["id"]]
    with session_scope(settings) as session:
        assert session.scalars(select(Owner.name)).all() == [settings.default_owner]


def _revoke_in_database(settings: Settings, header: dict[str, str]) -> None:
    key_id = header["Authorization"].removeprefix("Bearer aplsk_").split("_", 1)[0]
    with session_scope(settings) as session:
        row = session.scalars(select(ApiKey).where(ApiKey.key_id == key_id)).one()
        row.revoked_at = utcnow()


def test_an_accepted_key_is_reused_for_auth_cache_seconds(
    client: TestClient, settings: Settings, alice: dict[str, str]
) -> None:
    assert client.get("/v1/datasets", headers=alice).status_code == 200
    _revoke_in_database(settings, alice)  # as another process (the CLI) would
    assert client.get("/v1/datasets", headers=alice).status_code == 200  # still within the cache time
    app_state(client.app).principals.clear()  # the cache time has passed
    assert_problem(client.get("/v1/datasets", headers=alice), 401, "unauthorized")


def test_with_no_auth_cache_a_revoked_key_stops_at_once(settings: Settings) -> None:
    uncached = settings.model_copy(update={"auth_cache_seconds": 0})
    header = {"Authorization": f"Bearer {make_key(settings, 'erin')}"}
    with TestClient(create_app(uncached), raise_server_exceptions=False) as client:
        assert client.get("/v1/datasets", headers=header).status_code == 200
        _revoke_in_database(settings, header)
        assert_problem(client.get("/v1/datasets", headers=header), 401, "unauthorized")


def test_a_rejected_key_is_not_cached(client: TestClient, alice: dict[str, str]) -> None:
    wrong = {"Authorization": alice["Authorization"][:-2] + "xx"}
    for _ in range(2):
        assert_problem(client.get("/v1/datasets", headers=wrong), 401, "unauthorized")
    assert len(app_state(client.app).principals) == 0


def test_last_used_at_is_recorded(client: TestClient, settings: Settings, alice: dict[str, str]) -> None:
    key_id = alice["Authorization"].removeprefix("Bearer aplsk_").split("_", 1)[0]
    before = utcnow()
    assert client.get("/v1/datasets", headers=alice).status_code == 200
    with session_scope(settings) as session:
        row = session.scalars(select(ApiKey).where(ApiKey.key_id == key_id)).one()
        assert row.last_used_at is not None and row.last_used_at >= before.replace(microsecond=0)


def test_cli_lists_and_revokes_keys(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APLSERVE_DATA_DIR", str(settings.data_dir))
    if settings.database_url:
        monkeypatch.setenv("APLSERVE_DATABASE_URL", settings.database_url)
    from core.settings import get_settings

    key = make_key(settings, "frank")
    other = make_key(settings, "gina")
    key_id = key.removeprefix("aplsk_").split("_", 1)[0]
    uncached = settings.model_copy(update={"auth_cache_seconds": 0})
    get_settings.cache_clear()
    try:
        listed = CliRunner().invoke(cli, ["keys", "list", "--name", "frank"])
        revoked = CliRunner().invoke(cli, ["keys", "revoke", key_id])
        again = CliRunner().invoke(cli, ["keys", "revoke", key_id])
        after = CliRunner().invoke(cli, ["keys", "list"])
    finally:
        get_settings.cache_clear()
    assert listed.exit_code == 0, listed.output
    assert key_id in listed.stdout and "frank" in listed.stdout and "gina" not in listed.stdout
    assert key.split("_", 2)[2] not in listed.stdout  # the secret is never shown
    assert revoked.exit_code == 0 and f"revoked API key {key_id}" in revoked.stdout
    assert again.exit_code == 1 and "no active API key" in again.output
    frank_line = next(line for line in after.stdout.splitlines() if line.startswith(key_id))
    assert frank_line.split()[-1] != "-"  # the revoked column is filled in
    with TestClient(create_app(uncached), raise_server_exceptions=False) as client:
        assert_problem(
            client.get("/v1/datasets", headers={"Authorization": f"Bearer {key}"}), 401, "unauthorized"
        )
        assert client.get("/v1/datasets", headers={"Authorization": f"Bearer {other}"}).status_code == 200
