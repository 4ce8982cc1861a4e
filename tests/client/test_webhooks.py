"""Webhooks: the signature scheme, delivery with retries against a real local receiver,
the per-owner secret routes, and the call sent when a queued job is cancelled.

Jobs finished by a worker are covered end to end in test_live_embedded.py.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.auth import create_api_key
from api.main import create_app
from aplserve.client import verify_webhook
from core.broker import close_celery_apps
from core.db.migrate import upgrade_to_head
from core.db.session import dispose_engines, session_scope
from core.settings import Settings
from core.webhooks.delivery import Delivery, backoff_seconds, deliver
from core.webhooks.destinations import literal_refusal, refusal
from core.webhooks.signing import signature, verify_signature
from tests.client.receiver import Call, running_receiver
from tests.services import unique_name

SECRET = "whsec_test"


def _delivery(
    url: str, body: bytes = b'{"event":"job.succeeded"}', *, allow_private: bool = True
) -> Delivery:
    """A delivery to `url`; the test receivers listen on loopback, so private addresses are allowed."""
    return Delivery(
        id="d-1", url=url, event="job.succeeded", body=body, secret=SECRET, allow_private=allow_private
    )


def _verified(call: Call, secret: str) -> bool:
    return verify_webhook(
        secret, call.body, call.headers.get("X-Aplserve-Timestamp"), call.headers.get("X-Aplserve-Signature")
    )


# --- signature ----------------------------------------------------------------------------


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    import hashlib
    import hmac

    body = b'{"a":1}'
    expected = hmac.new(b"k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert signature("k", 1700000000, body) == f"sha256={expected}"


@pytest.mark.parametrize(
    ("secret", "body", "timestamp", "header", "ok"),
    [
        (SECRET, b"{}", "1000", signature(SECRET, 1000, b"{}"), True),
        ("other", b"{}", "1000", signature(SECRET, 1000, b"{}"), False),  # wrong secret
        (SECRET, b"{ }", "1000", signature(SECRET, 1000, b"{}"), False),  # body changed
        (SECRET, b"{}", "1001", signature(SECRET, 1000, b"{}"), False),  # timestamp changed
        (SECRET, b"{}", None, signature(SECRET, 1000, b"{}"), False),
        (SECRET, b"{}", "1000", None, False),
        (SECRET, b"{}", "-5", signature(SECRET, 1000, b"{}"), False),
        (SECRET, b"{}", "1000", "sha256=" + "0" * 64, False),
    ],
)
def test_verify(secret: str, body: bytes, timestamp: str | None, header: str | None, ok: bool) -> None:
    assert verify_signature(secret, body, timestamp, header, now=1010) is ok
    assert verify_webhook(secret, body, timestamp, header, now=1010) is ok


def test_an_old_or_future_timestamp_is_a_replay() -> None:
    header = signature(SECRET, 1000, b"{}")
    assert verify_signature(SECRET, b"{}", "1000", header, now=1000 + 300)
    assert not verify_signature(SECRET, b"{}", "1000", header, now=1000 + 301)
    assert not verify_signature(SECRET, b"{}", "1000", header, now=1000 - 301)


# --- delivery -----------------------------------------------------------------------------


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff_seconds(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert backoff_seconds(20) == 30.0


def test_retries_until_the_receiver_accepts() -> None:
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(seconds)

    with running_receiver([503, 500]) as receiver:
        result = deliver(_delivery(receiver.url), first_backoff=0.05, sleep=sleep)
        calls = receiver.wait_for(3, timeout=5)
    assert result.delivered
    assert [a.status for a in result.attempts] == [503, 500, 200]
    assert waits == [0.05, 0.1]
    assert [c.answered for c in calls] == [503, 500, 200]
    assert calls[1].at - calls[0].at >= 0.05 and calls[2].at - calls[1].at >= 0.1
    for number, call in enumerate(calls, start=1):
        assert _verified(call, SECRET)  # every attempt is signed afresh
        assert call.headers["X-Aplserve-Delivery"] == "d-1"  # one id to deduplicate on
        assert call.headers["X-Aplserve-Attempt"] == str(number)
        assert call.headers["X-Aplserve-Event"] == "job.succeeded"
        assert call.headers["Content-Type"] == "application/json"


def test_gives_up_after_the_last_attempt() -> None:
    with running_receiver([500] * 10) as receiver:
        result = deliver(_delivery(receiver.url), max_attempts=3, first_backoff=0.01)
        # deliver() has returned, so it sends nothing more, and the receiver records each
        # call before answering it: the calls it made are all there now.
        receiver.wait_for(3, timeout=5)
        assert len(receiver.calls) == 3
    assert not result.delivered and [a.status for a in result.attempts] == [500, 500, 500]


def test_a_refusal_is_final() -> None:
    with running_receiver([410]) as receiver:
        result = deliver(_delivery(receiver.url), first_backoff=0.01)
    assert not result.delivered and [a.status for a in result.attempts] == [410]


def test_an_unreachable_receiver_is_retried() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = deliver(
        _delivery(f"http://127.0.0.1:{port}/hook"), max_attempts=2, first_backoff=0.01, timeout=2
    )
    assert not result.delivered
    assert [a.status for a in result.attempts] == [None, None]
    assert all(a.error and "ConnectError" in a.error for a in result.attempts)


# --- destinations: public addresses only unless allowed ------------------------------------


def test_a_loopback_receiver_is_not_called_unless_private_addresses_are_allowed() -> None:
    with running_receiver([200]) as receiver:
        refused = deliver(_delivery(receiver.url, allow_private=False), first_backoff=0.01)
        assert receiver.calls == []  # nothing was sent (deliver has returned: nothing can follow)
        allowed = deliver(_delivery(receiver.url, allow_private=True), first_backoff=0.01)
    assert not refused.delivered and len(refused.attempts) == 1
    assert refused.attempts[0].error is not None and refused.attempts[0].error.startswith("refused:")
    assert allowed.delivered


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://api.localhost/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata
        "http://[::1]:8000/hook",
        "http://[::ffff:127.0.0.1]/hook",  # IPv4-mapped loopback
        "http://0.0.0.0/hook",
    ],
)
def test_non_public_destinations_are_refused(url: str) -> None:
    assert literal_refusal(url) is not None
    assert refusal(url) is not None


def test_public_addresses_and_unresolvable_names_pass_the_check() -> None:
    assert literal_refusal("https://8.8.8.8/hook") is None and refusal("https://8.8.8.8/hook") is None
    # A name is only judged by what it resolves to; one that does not resolve fails like any
    # unreachable receiver (and is retried), it is not refused.
    assert literal_refusal("https://hooks.example.invalid/x") is None
    assert refusal("https://hooks.example.invalid/x") is None


def test_a_name_is_judged_by_every_address_it_resolves_to(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = {
        "hooks.example.com": ["93.184.215.14"],
        "rebinding.example.com": ["93.184.215.14", "10.0.0.7"],  # one private answer is enough
        "metadata.example.com": ["169.254.169.254"],
    }

    def resolve(host: str, port: int, *args: object, **kwargs: object) -> list[tuple[object, ...]]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in answers[host]]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    assert refusal("https://hooks.example.com/x") is None
    assert "10.0.0.7" in (refusal("https://rebinding.example.com/x") or "")
    assert "169.254.169.254" in (refusal("http://metadata.example.com/x") or "")


# --- the secret routes and the queued-cancel call (API in process, SQLite) ----------------


@pytest.fixture
def api(data_dir: Path) -> Iterator[tuple[TestClient, Settings]]:
    settings = Settings(
        data_dir=data_dir, queue_name=unique_name("aplserve_wh_q"), webhook_allow_private_addresses=True
    )
    upgrade_to_head(settings)
    try:
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            yield client, settings
    finally:
        close_celery_apps()
        dispose_engines()


def _key(settings: Settings, owner: str) -> dict[str, str]:
    with session_scope(settings) as session:
        _, key = create_api_key(session, owner)
    return {"Authorization": f"Bearer {key}"}


def test_each_owner_has_a_stable_secret_until_rotated(api: tuple[TestClient, Settings]) -> None:
    client, settings = api
    alice, bob = _key(settings, "alice"), _key(settings, "bob")
    first = client.get("/v1/webhooks/secret", headers=alice)
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["secret"].startswith("whsec_") and len(body["secret"]) == 54
    assert body["signature_header"] == "X-Aplserve-Signature"
    assert body["timestamp_header"] == "X-Aplserve-Timestamp"
    assert client.get("/v1/webhooks/secret", headers=alice).json()["secret"] == body["secret"]
    assert client.get("/v1/webhooks/secret", headers=bob).json()["secret"] != body["secret"]
    rotated = client.post("/v1/webhooks/secret/rotate", headers=alice).json()["secret"]
    assert rotated != body["secret"]
    assert client.get("/v1/webhooks/secret", headers=alice).json()["secret"] == rotated
    missing = client.get("/v1/webhooks/secret")
    assert missing.status_code == 401
    assert missing.headers["content-type"].startswith("application/problem+json")


def test_bad_webhook_urls_are_rejected(api: tuple[TestClient, Settings]) -> None:
    client, settings = api
    alice = _key(settings, "alice")
    for url in ("ftp://example.org/x", "not a url", "http://"):
        response = client.post(
            "/v1/jobs", headers=alice, json={"dataset_id": "x", "base_model": "minilm-l6", "webhook_url": url}
        )
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["loc"][:2] == ["body", "webhook_url"]


def test_private_webhook_urls_are_refused_at_post_unless_allowed(data_dir: Path) -> None:
    settings = Settings(data_dir=data_dir, queue_name=unique_name("aplserve_wh_q"))
    upgrade_to_head(settings)
    alice = _key(settings, "alice")
    try:
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            for url in ("http://127.0.0.1:8080/hook", "http://localhost/hook", "http://169.254.169.254/x"):
                response = client.post(
                    "/v1/jobs",
                    headers=alice,
                    json={"dataset_id": "x", "base_model": "minilm-l6", "webhook_url": url},
                )
                assert response.status_code == 422, response.text
                assert response.json()["code"] == "webhook_url_refused"
                assert response.json()["errors"][0]["loc"][:2] == ["body", "webhook_url"]
    finally:
        close_celery_apps()
        dispose_engines()


def test_cancelling_a_queued_job_calls_its_webhook(api: tuple[TestClient, Settings]) -> None:
    client, settings = api
    alice = _key(settings, "alice")
    csv = b"text,labels\n" + b"".join(f"sample {i},{'a' if i % 2 else 'b'}\n".encode() for i in range(12))
    dataset = client.post("/v1/datasets", headers=alice, files={"file": ("d.csv", csv, "text/csv")})
    assert dataset.status_code == 201, dataset.text
    secret = client.get("/v1/webhooks/secret", headers=alice).json()["secret"]
    with running_receiver([502]) as receiver:  # the first attempt fails, the retry arrives
        job = client.post(
            "/v1/jobs",
            headers=alice,
            json={"dataset_id": dataset.json()["id"], "base_model": "minilm-l6", "webhook_url": receiver.url},
        ).json()
        assert job["status"] == "queued" and job["spec"]["webhook_url"] == receiver.url
        cancelled = client.post(f"/v1/jobs/{job['id']}/cancel", headers=alice)
        assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
        calls = receiver.wait_for(2, timeout=10)
    assert [c.answered for c in calls] == [502, 200]
    assert all(_verified(call, secret) for call in calls)
    assert not _verified(calls[1], "whsec_someone_else")
    payload = json.loads(calls[1].body)
    assert payload["event"] == "job.cancelled" and payload["id"] == calls[1].headers["X-Aplserve-Delivery"]
    assert payload["job"] == client.get(f"/v1/jobs/{job['id']}", headers=alice).json()
