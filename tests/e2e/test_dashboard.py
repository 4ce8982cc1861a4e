"""The dashboard in a real browser (Debian's Chromium, headless, driven by Playwright)
against a live `aplserve serve` with its embedded worker training a tiny BERT.

The server runs as a subprocess with a private data dir (SQLite + server-less broker),
so nothing here shares state with other tests. Every page must load without a single
console error, and a label named like an HTML tag must show up as text.
Screenshots land in test-output/screenshots/; the compare view, the sweep view and the
model page are also copied to docs/compare.png, docs/sweep.png and docs/model-page.png for
the README when those files are missing or APLSERVE_UPDATE_DOCS_SCREENSHOT=1 is set.
"""

from __future__ import annotations

import bisect
import contextlib
import csv
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from apl.catalog import FAMILY_DEFAULTS
from tests.e2e.browser import REPO, SCREENSHOTS, VIEWPORT, chromium, require_browser

XSS_LABEL = "<img src=x onerror=alert(1)>"
KEYWORDS = {
    "animal": ["cat", "dog", "horse", "cow"],
    "color": ["red", "blue", "green", "yellow"],
    "food": ["apple", "bread", "cheese", "rice"],
    XSS_LABEL: ["script", "tag", "markup", "html"],
}
FILLER = ["the", "a", "is", "on", "with", "today", "there", "very", "some", "near"]
TERMINAL = {"succeeded", "failed", "cancelled"}

pytestmark = pytest.mark.timeout(300)


# --------------------------------------------------------------------------- live server


@dataclass
class Live:
    base_url: str
    key: str
    tiny_bert: str
    dataset: dict[str, Any]
    process: subprocess.Popen[bytes]
    log_path: Path
    jobs: dict[str, str] = field(default_factory=dict)

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {self.key}"}, timeout=30
        )

    def submit(
        self,
        loss: dict[str, Any],
        epochs: int,
        seed: int = 0,
        decision: dict[str, Any] | None = None,
        **extra: Any,
    ) -> str:
        spec: dict[str, Any] = {
            **extra,
            "dataset_id": self.dataset["id"],
            "base_model": self.tiny_bert,
            "loss": loss,
            "hyperparameters": {
                "epochs": epochs,
                "batch_size": 8,
                "learning_rate": 3e-3,
                "max_length": 32,
                "seed": seed,
                "warmup_fraction": 0.0,
            },
        }
        if decision is not None:
            spec["decision"] = decision
        with self.client() as client:
            response = client.post("/v1/jobs", json=spec)
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    def job(self, job_id: str) -> dict[str, Any]:
        with self.client() as client:
            response = client.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def wait_job(self, job_id: str, statuses: set[str], timeout: float = 150) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["status"] in statuses:
                return job
            if job["status"] in TERMINAL or time.monotonic() > deadline:
                status, error = job["status"], job.get("error")
                raise AssertionError(f"job {job_id} is {status}: {error}\n{self.log_tail()}")
            time.sleep(0.25)

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _write_csv(path: Path, n: int = 160, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    labels = list(KEYWORDS)
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["text", "labels"])
        for i in range(n):
            chosen = [name for name in labels if rng.random() < 0.35] or [labels[i % len(labels)]]
            if i % 40 == 39:  # a few unlabelled samples: the dataset gets a warning
                chosen = []
            words = [str(rng.choice(FILLER)) for _ in range(4)]
            words += [str(rng.choice(KEYWORDS[name])) for name in chosen]
            rng.shuffle(words)
            writer.writerow([" ".join(words), "|".join(chosen)])
    return path


def _descendant_groups(pid: int) -> set[int]:
    """Process groups of `pid` and its descendants (the embedded worker has its own group)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    groups: set[int] = set()
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            groups.add(os.getpgid(current))
        except ProcessLookupError:
            continue
        stack.extend(children.get(current, []))
    return groups


def _stop(process: subprocess.Popen[bytes]) -> None:
    groups = _descendant_groups(process.pid)
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=20)
    for group in groups:  # whatever did not stop by itself (only groups this test started)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)
    process.wait(timeout=10)


@pytest.fixture(scope="module")
def browser_ready() -> None:
    require_browser()


@pytest.fixture(scope="module")
def live(browser_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    from tests.apl.synthetic import write_tiny_bert

    root = tmp_path_factory.mktemp("dashboard")
    data_dir = root / "var"
    tiny_bert = write_tiny_bert(root / "tiny-bert")
    env = {k: v for k, v in os.environ.items() if not k.startswith("APLSERVE_")}
    env |= {
        "APLSERVE_DATA_DIR": str(data_dir),
        "APLSERVE_EVENTS_POLL_SECONDS": "0.2",
        "APLSERVE_LOG_LEVEL": "warning",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONUNBUFFERED": "1",
    }
    cli = [sys.executable, "-m", "aplserve.cli"]
    created = subprocess.run(
        [*cli, "keys", "create", "--name", "dashboard-e2e"],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    key = created.stdout.strip().splitlines()[-1]
    port = _free_port()
    log_path = root / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*cli, "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=root,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, log_path.read_text(errors="replace")
            try:
                if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the server did not answer /healthz in time"
            time.sleep(0.2)
        csv_path = _write_csv(root / "tags.csv")
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=base_url, headers=headers, timeout=60) as client:
            response = client.post(
                "/v1/datasets",
                files={"file": ("tags.csv", csv_path.read_bytes(), "text/csv")},
                data={"name": "keyword tags"},
            )
        assert response.status_code == 201, response.text
        yield Live(base_url, key, f"hf:{tiny_bert}", response.json(), process, log_path)
    finally:
        _stop(process)


# --------------------------------------------------------------------------- browser


@dataclass
class Watched:
    """A page with everything that went wrong in it recorded."""

    page: Any
    errors: list[str]
    dialogs: list[str]


@pytest.fixture(scope="module")
def browser(browser_ready: None) -> Iterator[Any]:
    with chromium() as instance:
        yield instance


@pytest.fixture
def open_page(browser: Any, live: Live) -> Iterator[Callable[..., Watched]]:
    contexts: list[Any] = []
    watched: list[Watched] = []

    def open_(path: str = "/", signed_in: bool = True, allowed_errors: tuple[str, ...] = ()) -> Watched:
        context = browser.new_context(viewport=VIEWPORT, base_url=live.base_url, accept_downloads=True)
        contexts.append(context)
        if signed_in:  # what the sign-in form stores (the sign-in flow itself has its own test)
            context.add_init_script(f"sessionStorage.setItem('aplserve.apiKey', {live.key!r});")
        page = context.new_page()
        page.set_default_timeout(20_000)
        record = Watched(page, [], [])
        page.on(
            "console",
            lambda m: (
                m.type == "error"
                and not any(a in m.text for a in allowed_errors)
                and record.errors.append(f"console: {m.text}")
            ),
        )
        page.on("pageerror", lambda e: record.errors.append(f"page error: {e}"))
        page.on("dialog", lambda d: (record.dialogs.append(f"{d.type}: {d.message}"), d.dismiss()))
        page.goto(path)
        watched.append(record)
        return record

    yield open_
    for record in watched:
        assert record.errors == [], record.errors
        assert record.dialogs == [], record.dialogs
        assert record.page.locator('img[src="x"]').count() == 0
    for context in contexts:
        context.close()


def _screenshot(page: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def _points(page: Any, chart: str) -> int:
    return int(page.locator(f'figure[data-chart="{chart}"]').get_attribute("data-points") or 0)


# --------------------------------------------------------------------------- tests


def test_sign_in_keeps_the_key_for_the_tab_and_refuses_a_wrong_one(
    open_page: Callable[..., Watched], live: Live
) -> None:
    watched = open_page("/", signed_in=False, allowed_errors=("401",))
    page = watched.page
    page.get_by_label("API key").fill("not-a-key")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text("That key was not accepted").wait_for()
    assert page.evaluate("sessionStorage.getItem('aplserve.apiKey')") is None
    _screenshot(page, "sign-in")

    page.get_by_label("API key").fill(live.key)
    page.get_by_role("button", name="Sign in").click()
    page.locator("#jobs-table[data-loaded=true]").wait_for()
    assert page.evaluate("sessionStorage.getItem('aplserve.apiKey')") == live.key
    assert live.key not in page.url
    page.reload()
    page.locator("#jobs-table[data-loaded=true]").wait_for()  # still signed in after a reload
    page.get_by_role("button", name="Sign out").click()
    page.get_by_label("API key").wait_for()
    assert page.evaluate("sessionStorage.getItem('aplserve.apiKey')") is None


def test_jobs_list_and_job_charts_update_live(open_page: Callable[..., Watched], live: Live) -> None:
    watched = open_page("/#/jobs")
    page = watched.page
    page.locator("#jobs-table[data-loaded=true]").wait_for()
    live.jobs["apl"] = live.submit({"name": "apl"}, epochs=8, name="apl-baseline", metadata={"run": "ui"})
    live.jobs["bce"] = live.submit({"name": "bce"}, epochs=4)

    row = page.locator(f'tr[data-job-id="{live.jobs["apl"]}"]')
    row.wait_for()  # appears without a reload
    assert "keyword tags" in row.inner_text()
    assert "APL" in row.inner_text() and "apl-baseline" in row.inner_text()
    page.locator(f'tr[data-job-id="{live.jobs["apl"]}"][data-status="running"]').wait_for(timeout=90_000)
    _screenshot(page, "jobs")

    row.get_by_role("link", name=live.jobs["apl"][:8]).click()
    page.locator('#job-status [data-status="running"]').wait_for()
    seen: list[int] = []
    connection: set[str | None] = set()  # read while the job runs: a fast job may end before a screenshot
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        running = page.locator('#job-status [data-status="running"]').count() == 1
        count = _points(page, "map")
        if running and count and (not seen or count > seen[-1]):
            seen.append(count)
            connection.add(page.locator("#connection").get_attribute("data-state"))
        if len(seen) >= 2 or (not running and count):
            break
        page.wait_for_timeout(100)
    assert len(seen) >= 2, f"the chart did not gain points while the job ran: {seen}"
    _screenshot(page, "job-running")
    assert "live" in connection, connection

    page.locator('#job-status [data-status="succeeded"]').wait_for(timeout=90_000)
    page.locator('#connection[data-state="ended"]').wait_for()  # the stream stops at a final state
    for chart in ("loss", "map", "f1"):
        page.locator(f'figure[data-chart="{chart}"][data-points="{16 if chart != "map" else 8}"]').wait_for()
    table = page.locator(".per-class-table")
    table.get_by_text(XSS_LABEL, exact=True).wait_for()  # shown as text, not markup
    labels = table.locator("tbody tr td:first-child")
    table.get_by_role("button", name="Label").click()
    assert labels.all_inner_texts() == sorted(KEYWORDS)
    table.get_by_role("button", name="Label").click()
    assert labels.all_inner_texts() == sorted(KEYWORDS, reverse=True)
    page.get_by_role("button", name="Cancel job").wait_for(state="hidden")
    page.get_by_text("Open model").wait_for()
    assert page.locator("#job-name").inner_text() == "apl-baseline"
    assert "run=ui" in page.locator(".kv").inner_text()
    # The stored history streamed in live: every epoch and checkpoint, then the success.
    events = page.locator("#job-events li")
    page.locator('#job-events li[data-type="epoch"]').nth(7).wait_for()
    assert page.locator('#job-events li[data-type="checkpoint"]').count() == 8
    assert "succeeded: model" in events.last.inner_text()
    _screenshot(page, "job")


def test_new_job_form_starts_a_job_and_the_cancel_button_stops_it(
    open_page: Callable[..., Watched], live: Live
) -> None:
    watched = open_page("/#/jobs")
    page = watched.page
    page.get_by_role("button", name="New job").click()
    form = page.locator("#new-job-form")
    form.get_by_label("Dataset").select_option(live.dataset["id"])
    form.get_by_label("Base model").fill(live.tiny_bert)
    form.get_by_label("Loss", exact=True).select_option("asl")
    lr_default = f"{FAMILY_DEFAULTS['text'].learning_rate} (default)"
    assert form.get_by_label("Learning rate").get_attribute("placeholder") == lr_default
    form.get_by_label("Epochs").fill("200")
    form.get_by_label("Batch size").fill("8")
    form.get_by_label("γ₋").fill("2")
    form.get_by_label("Threshold policy").select_option("recall_at")
    form.get_by_label("Target").fill("0.9")
    form.get_by_label("Min labels").fill("1")
    _screenshot(page, "new-job")
    form.get_by_role("button", name="Start job").click()
    page.wait_for_url("**/#/jobs/*")
    job_id = page.url.rsplit("/", 1)[1]
    spec = live.job(job_id)["spec"]
    assert (spec["loss"]["name"], spec["loss"]["gamma_neg"], spec["loss"]["clip"]) == ("asl", 2.0, 0.05)
    assert spec["hyperparameters"]["epochs"] == 200 and spec["hyperparameters"]["batch_size"] == 8
    # The learning rate, left empty, is the base model's default (an hf: reference: the text family's).
    assert spec["hyperparameters"]["learning_rate"] == FAMILY_DEFAULTS["text"].learning_rate
    assert spec["decision"] == {"policy": "recall_at", "target": 0.9, "min_labels": 1}
    assert spec["calibration"] == "auto"  # the form's first choice, the server's default

    page.get_by_role("button", name="Cancel job").click()
    page.get_by_role("button", name="Click again to cancel").click()
    page.locator('#job-status [data-status="cancelled"]').wait_for(timeout=60_000)
    page.get_by_role("button", name="Cancel job").wait_for(state="hidden")
    assert live.job(job_id)["status"] == "cancelled"


def test_compare_labels_single_runs_and_never_calls_one_the_winner(
    open_page: Callable[..., Watched], live: Live
) -> None:
    if "bce" not in live.jobs:
        pytest.fail("needs the jobs of test_jobs_list_and_job_charts_update_live", pytrace=False)
    finished = {name: live.wait_job(job_id, {"succeeded"}) for name, job_id in live.jobs.items()}
    watched = open_page("/#/compare")
    page = watched.page
    for job_id in live.jobs.values():  # pick the two runs in the picker
        page.locator(f'#compare-picker input[data-job-id="{job_id}"]').check()
    page.locator("#compare-apply").click()
    page.locator("[data-compare-ready=true]").wait_for()
    rows = page.locator("#compare-results tbody tr")
    assert rows.count() == 2
    highest = page.locator('#compare-results tr[data-highest="true"]')
    assert highest.count() == 1
    best = max(finished.values(), key=lambda job: job["best_metrics"]["map"])
    assert highest.get_attribute("data-job-id") == best["id"]
    assert "highest val mAP" in highest.inner_text()
    text = page.locator("#app").inner_text()
    assert "winner" not in text.lower()  # one seed on the tuning split is not a verdict
    assert "Single runs on the validation split" in page.locator("#compare-caveat").inner_text()
    assert (
        page.locator("#app").get_by_role("link", name="sweep", exact=True).get_attribute("href") == "#/sweeps"
    )
    assert _points(page, "map") == 8 + 4
    assert _points(page, "val_loss") == 8 + 4
    page.locator("details.picker-card").evaluate("el => el.open = false")
    path = _screenshot(page, "compare")
    _update_docs_image(path, "compare.png")


def _update_docs_image(path: Path, name: str) -> None:
    readme_image = REPO / "docs" / name
    if os.environ.get("APLSERVE_UPDATE_DOCS_SCREENSHOT") == "1" or not readme_image.exists():
        shutil.copyfile(path, readme_image)  # refreshed on request only, so a test run leaves git clean


def _post_sweep(live: Live, seeds: list[int], epochs: int) -> dict[str, Any]:
    spec = {
        "dataset_id": live.dataset["id"],
        "base_model": live.tiny_bert,
        "candidates": [{"name": "bce"}, {"name": "apl"}],
        "seeds": seeds,
        "hyperparameters": {"epochs": epochs, "batch_size": 8, "learning_rate": 3e-3, "max_length": 32},
        "test_fraction": 0.25,
    }
    with live.client() as client:
        response = client.post("/v1/sweeps", json=spec)
    assert response.status_code == 202, response.text
    return dict(response.json())


def test_sweep_page_shows_the_leaderboard_with_intervals_and_the_recommended_model(
    open_page: Callable[..., Watched], live: Live
) -> None:
    sweep = _post_sweep(live, seeds=[0, 1], epochs=2)
    watched = open_page("/#/sweeps")
    page = watched.page
    page.locator(f'#sweeps-table tr[data-sweep-id="{sweep["id"]}"]').get_by_role("link").click()
    page.locator("[data-sweep-ready=true]").wait_for()
    if page.locator("#app").get_attribute("data-sweep-status") not in TERMINAL:
        assert page.locator("#verdict").get_attribute("data-verdict") == "incomplete"
        assert "Incomplete" in page.locator("#verdict").inner_text()
    page.locator('[data-sweep-status="succeeded"]').wait_for(timeout=240_000)
    with live.client() as client:
        board = client.get(f"/v1/sweeps/{sweep['id']}/leaderboard").json()
    page.locator(f'#verdict[data-verdict="{board["verdict"]}"]').wait_for()
    ranked = page.locator("#leaderboard tbody tr[data-candidate]")
    names = ranked.evaluate_all("rs => rs.map(r => r.dataset.candidate)")
    assert names == [row["candidate"]["name"] for row in board["rows"]]
    # The children's linear baselines: rows of their own, marked, never ranked (issue 23).
    assert page.locator("#leaderboard tbody tr.baseline-row").count() == len(board.get("baseline_rows", []))
    assert (
        page.locator('figure[data-chart="intervals"]').get_attribute("data-points") == "4"
    )  # a dot per seed
    assert page.locator('figure[data-chart="intervals"]').get_attribute("data-intervals") == "2"
    page.locator('figure[data-chart="curves"][data-points="8"]').wait_for()  # 4 children x 2 epochs
    assert page.locator("#sweep-children tbody tr").count() == 4
    verdict = page.locator("#verdict").inner_text()
    assert "2000 resamples" in page.locator("#sweep-method").inner_text()
    path = _screenshot(page, "sweep")
    _update_docs_image(path, "sweep.png")
    if board["verdict"] == "winner":
        assert "wins" in verdict and page.locator('#leaderboard tr[data-winner="true"]').count() == 1
        page.get_by_role("link", name="Open recommended model").click()
        page.wait_for_url(f"**/#/models/{board['winner']['model_id']}")
    else:
        assert "No clear winner" in verdict and "includes 0" in verdict
        assert page.get_by_role("link", name="Open recommended model").count() == 0


def test_sweep_page_shows_the_search_per_candidate_with_pruned_trials_and_importances(
    open_page: Callable[..., Watched], live: Live
) -> None:
    spec = {
        "dataset_id": live.dataset["id"],
        "base_model": live.tiny_bert,
        "candidates": [{"name": "bce"}, {"name": "apl"}],
        "seeds": [0],
        "hyperparameters": {"epochs": 3, "batch_size": 8, "max_length": 32},
        "test_fraction": 0.25,
        "search": {"trials": 3, "space": {"learning_rate": {"low": 1e-4, "high": 3e-2, "log": True}}},
    }
    with live.client() as client:
        response = client.post("/v1/sweeps", json=spec)
    assert response.status_code == 202, response.text
    sweep = response.json()
    watched = open_page(f"/#/sweeps/{sweep['id']}")
    page = watched.page
    page.locator("[data-sweep-ready=true]").wait_for()
    assert page.locator("#sweep-search").count() == 1
    page.locator('[data-sweep-status="succeeded"]').wait_for(timeout=300_000)
    with live.client() as client:
        listed = client.get(f"/v1/sweeps/{sweep['id']}/trials").json()
        board = client.get(f"/v1/sweeps/{sweep['id']}/leaderboard").json()
    page.locator('#search-phase[data-phase="replicate"]').wait_for()
    for name in ("bce", "apl"):
        mine = [t for t in listed["items"] if t["candidate"]["name"] == name]
        figure = page.locator(f'figure[data-chart="search-{name}"]')
        drawn = sum(1 for t in mine if t["state"] in ("complete", "pruned") and t["value"] is not None)
        assert figure.get_attribute("data-points") == str(drawn) == "3"
        assert figure.get_attribute("data-pruned") == str(sum(t["state"] == "pruned" for t in mine))
        row = page.locator(f'#search-best tr[data-candidate="{name}"]')
        chosen = next(r for r in board["rows"] if r["candidate"]["name"] == name)["config"]["learning_rate"]
        shown = re.search(r"learning_rate = (\S+)", row.inner_text())
        assert shown and math.isclose(float(shown.group(1)), chosen, rel_tol=1e-2), (shown, chosen)
        complete = sum(t["state"] == "complete" for t in mine)  # Optuna's importance needs two
        assert row.locator('[data-param="learning_rate"]').count() == (1 if complete >= 2 else 0), complete
        assert complete >= 2 or "needs two complete trials" in row.inner_text()
    assert page.locator("#sweep-children tbody tr").count() == 6 + 2  # trials, then one replicate each
    path = _screenshot(page, "sweep-search")
    _update_docs_image(path, "sweep-search.png")


def test_new_sweep_form_starts_a_sweep_and_its_cancel_button_stops_it(
    open_page: Callable[..., Watched], live: Live
) -> None:
    watched = open_page("/#/sweeps")
    page = watched.page
    page.get_by_role("button", name="New sweep").click()
    form = page.locator("#new-sweep-form")
    form.get_by_label("Dataset").select_option(live.dataset["id"])
    form.get_by_label("Base model").fill(live.tiny_bert)
    form.get_by_label("FOCAL").uncheck()
    form.get_by_label("ASL").uncheck()
    form.get_by_label("Seeds").fill("4, 5")
    form.get_by_label("Epochs").fill("50")
    form.get_by_role("button", name="Start sweep").click()
    page.wait_for_url("**/#/sweeps/*")
    sweep_id = page.url.rsplit("/", 1)[1]
    with live.client() as client:
        sweep = client.get(f"/v1/sweeps/{sweep_id}").json()
    assert [c["name"] for c in sweep["spec"]["candidates"]] == ["bce", "apl"] and sweep["spec"]["seeds"] == [
        4,
        5,
    ]
    assert sweep["spec"]["hyperparameters"]["epochs"] == 50 and len(sweep["job_ids"]) == 4
    page.locator("[data-sweep-ready=true]").wait_for()
    page.get_by_role("button", name="Cancel sweep").click()
    page.get_by_role("button", name="Click again to cancel").click()
    page.locator('[data-sweep-status="cancelled"]').wait_for(timeout=60_000)
    assert page.locator("#verdict").get_attribute("data-verdict") == "incomplete"
    page.get_by_role("button", name="Cancel sweep").wait_for(state="hidden")


def test_dataset_page_shows_label_statistics_as_text(open_page: Callable[..., Watched], live: Live) -> None:
    dataset = live.dataset
    watched = open_page("/#/datasets")
    page = watched.page
    page.locator("#upload-form").wait_for()
    _screenshot(page, "datasets")
    page.get_by_role("link", name="keyword tags").click()
    page.locator('figure[data-chart="label-frequency"][data-points="4"]').wait_for()
    page.get_by_text(f"{dataset['label_cardinality']:.2f}", exact=True).wait_for()
    warnings = page.locator("#dataset-warnings li")
    assert warnings.all_inner_texts() == dataset["warnings"]
    assert "samples have no label" in warnings.first.inner_text()
    labels = page.locator(".labels-table tbody tr td:first-child")
    assert sorted(labels.all_inner_texts()) == sorted(KEYWORDS)
    counts = page.locator(".labels-table tbody tr td:nth-child(2)").all_inner_texts()
    assert [int(c) for c in counts] == sorted(dataset["label_counts"].values(), reverse=True)
    _screenshot(page, "dataset")


def test_upload_form_takes_columns_separators_and_the_delimiter(
    open_page: Callable[..., Watched], live: Live, tmp_path: Path
) -> None:
    rows = ["title;tags", *(f"film {i};{'drama,comedy' if i % 2 else 'drama'}" for i in range(60))]
    semicolons = tmp_path / "excel-export.csv"
    semicolons.write_text("\n".join(rows) + "\n")
    page = open_page("/#/datasets").page
    page.locator("#upload-form").wait_for()
    page.locator("#dataset-file").set_input_files(str(semicolons))
    page.get_by_text("Columns and separators").click()
    page.get_by_label("Text column").fill("title")
    page.get_by_label("Labels column").fill("tags")
    page.get_by_label("Label separator").fill(",")
    page.get_by_label("CSV delimiter").select_option(";")
    page.get_by_role("button", name="Upload").click()
    page.locator('figure[data-chart="label-frequency"][data-points="2"]').wait_for()
    dataset_id = page.url.rsplit("/", 1)[-1]
    headers = {"Authorization": f"Bearer {live.key}"}
    dataset = httpx.get(f"{live.base_url}/v1/datasets/{dataset_id}", headers=headers, timeout=30).json()
    assert dataset["label_counts"] == {"comedy": 30, "drama": 60}
    assert dataset["upload_options"] == {
        "text_column": "title",
        "labels_column": "tags",
        "label_separator": ",",
        "delimiter": ";",
    }


def test_model_page_downloads_and_predicts(open_page: Callable[..., Watched], live: Live) -> None:
    if "apl" not in live.jobs:
        pytest.fail("needs the jobs of test_jobs_list_and_job_charts_update_live", pytrace=False)
    job = live.wait_job(live.jobs["apl"], {"succeeded"})
    with live.client() as client:
        model = client.get(f"/v1/models/{job['model_id']}").json()
    watched = open_page("/#/models")
    page = watched.page
    page.get_by_role("link", name=job["model_id"][:8]).wait_for()
    _screenshot(page, "models")
    page.get_by_role("link", name=job["model_id"][:8]).click()
    page.locator(".thresholds-table").get_by_text(XSS_LABEL, exact=True).wait_for()

    with page.expect_download() as info:
        page.get_by_role("button", name="Download artifact").click()
    saved = Path(info.value.path())
    assert saved.stat().st_size == model["artifact"]["size_bytes"]

    page.locator("#predict-input").fill("the cat with red bread\nsome markup tag today")
    page.get_by_role("button", name="Predict").click()
    predictions = page.locator("#predict-results .prediction")
    # The first request loads the model into the serving engine: tens of seconds on a loaded
    # 2-core machine. Whatever comes first, results or a problem, is what the test reads.
    answered = page.locator("#predict-results .prediction, #predict-results .notice-error").first
    answered.wait_for(timeout=120_000)
    problem = page.locator("#predict-results .notice-error")
    assert problem.count() == 0, problem.inner_text()
    predictions.nth(1).wait_for()
    assert predictions.count() == 2
    rows = predictions.nth(0).locator(".score-row")
    assert sorted(rows.evaluate_all("rs => rs.map(r => r.dataset.label)")) == sorted(KEYWORDS)
    predictions.nth(1).locator(".score-row .label-name").get_by_text(XSS_LABEL, exact=True).wait_for()
    _screenshot(page, "model")


def test_event_stream_parser_handles_any_chunk_boundaries(open_page: Callable[..., Watched]) -> None:
    """The fetch-based SSE reader splits events the same way whatever the network chunking."""
    page = open_page("/#/datasets").page
    page.locator("#upload-form").wait_for()
    results = page.evaluate(
        """async () => {
          const { sseParser } = await import("/static/api.js");
          const text = "retry: 1500\\n\\nid: 5\\nevent: metric\\ndata: {\\"epoch\\":1}\\n\\n: heartbeat\\n\\n"
            + "event: status\\r\\ndata: one\\r\\ndata: two\\r\\n\\r\\nid: 7\\ndata:x\\n\\n";
          const out = [];
          for (const size of [1, 2, 3, 5, 8, 13, 1000]) {
            const events = [];
            let retry = null;
            const parser = sseParser((e) => events.push(e), (ms) => { retry = ms; });
            for (let i = 0; i < text.length; i += size) parser.push(text.slice(i, i + size));
            out.push({ retry, events });
          }
          return out;
        }"""
    )
    expected = [
        {"event": "metric", "data": '{"epoch":1}', "id": "5"},
        {"event": "status", "data": "one\ntwo", "id": "5"},
        {"event": "message", "data": "x", "id": "7"},
    ]
    assert results == [{"retry": 1500, "events": expected}] * 7


def _curve_at(curve: dict[str, list[float]], value: float) -> tuple[float | None, float]:
    """What the slider shows: the stored point with the smallest threshold at or above `value`."""
    at = bisect.bisect_left(curve["thresholds"], value)
    if at == len(curve["thresholds"]):
        return None, 0.0
    return curve["precision"][at], curve["recall"][at]


def _shown(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def test_model_page_shows_the_evaluation_and_marks_min_labels(
    open_page: Callable[..., Watched], live: Live
) -> None:
    """PR curve with the chosen threshold, a slider read off the stored curve without a request,
    the reliability diagram, and the try-it box marking the labels min_labels added."""
    decision = {"policy": "precision_at", "target": 0.8, "min_labels": 1}
    job = live.wait_job(live.submit({"name": "apl"}, epochs=4, decision=decision), {"succeeded"})
    with live.client() as client:
        evaluation = client.get(f"/v1/models/{job['model_id']}/evaluation").json()
    entries = {entry["label"]: entry for entry in evaluation["per_label"]}
    first = evaluation["per_label"][0]
    watched = open_page(f"/#/models/{job['model_id']}")
    page = watched.page
    figure = page.locator('figure[data-chart="pr-curve"]')
    figure.locator(f'xpath=self::*[@data-points="{len(first["pr_curve"]["thresholds"])}"]').wait_for()
    marker = page.evaluate(
        """() => Chart.getChart(document.querySelector('figure[data-chart="pr-curve"] canvas'))
              .data.datasets[1].data[0]"""
    )
    assert (marker["x"], marker["y"]) == pytest.approx((first["recall"], first["precision"]))
    assert page.locator("#slider-precision").inner_text() == _shown(first["precision"])

    page.locator("#eval-label").select_option(label=XSS_LABEL)  # the label name is text, not markup
    assert figure.get_attribute("data-label") == XSS_LABEL
    entry = entries[XSS_LABEL]
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    slider = page.locator("#threshold-slider")
    for value in (0.05, 0.3, entry["threshold"], 0.75, 0.999):
        slider.evaluate(
            "(el, v) => { el.value = String(v); el.dispatchEvent(new Event('input', { bubbles: true })); }",
            value,
        )
        precision, recall = _curve_at(entry["pr_curve"], value)
        assert page.locator("#slider-precision").inner_text() == _shown(precision), value
        assert page.locator("#slider-recall").inner_text() == _shown(recall), value
    assert requests == []  # every slider position came from the stored curve

    calibration = evaluation["calibration"]
    reliability = page.locator('figure[data-chart="reliability"]')
    nonempty = [sum(1 for b in calibration["reliability"][k] if b["count"]) for k in ("before", "after")]
    assert reliability.get_attribute("data-points") == str(nonempty[0])
    assert reliability.get_attribute("data-after") == str(nonempty[1])
    assert (
        f"{calibration['ece_before']:.3f} → {calibration['ece_after']:.3f}"
        in page.locator("#evaluation").inner_text()
    )
    table = page.locator(".evaluation-table tbody tr td:first-child")
    assert sorted(table.all_inner_texts()) == sorted(KEYWORDS)

    page.locator("#predict-input").fill("the cat with red bread\nnothing at all here")
    page.locator("#predict-threshold").fill("1")
    page.get_by_role("button", name="Predict").click()
    predictions = page.locator("#predict-results .prediction")
    predictions.nth(1).wait_for(timeout=90_000)  # the first request loads the model
    for i in range(2):  # threshold 1: no label passes, the model's min_labels=1 adds the best one
        chips = predictions.nth(i).locator(".prediction-labels .chip")
        assert chips.count() == 1 and "from-min-labels" in (chips.get_attribute("class") or "")
    path = _screenshot(page, "model-evaluation")
    page.locator("#predict-min-labels").fill("0")
    page.get_by_role("button", name="Predict").click()
    page.get_by_text("no label above its threshold").first.wait_for()
    assert page.locator("#predict-results .chip").count() == 0
    readme_image = REPO / "docs" / "model-page.png"
    if os.environ.get("APLSERVE_UPDATE_DOCS_SCREENSHOT") == "1" or not readme_image.exists():
        shutil.copyfile(path, readme_image)


def test_model_page_says_not_enough_evidence_where_that_is_the_truth(
    open_page: Callable[..., Watched], live: Live, tmp_path: Path
) -> None:
    """A label with 3 positives in all (known answer: never a tuned threshold, never judged for
    suspect labels) is listed under "Not enough evidence" with its reason; every label shows
    the calibrator it got, and the reliability note says where "after" was measured."""
    path = _write_csv(tmp_path / "rare.csv", n=120, seed=3)
    rows = path.read_text().splitlines()
    for i in (1, 41, 81):  # three samples gain the rare label
        text, labels = rows[i].rsplit(",", 1)
        rows[i] = f"{text},{'|'.join([x for x in labels.split('|') if x] + ['rare'])}"
    path.write_text("\n".join(rows) + "\n")
    with live.client() as client:
        dataset = client.post(
            "/v1/datasets", files={"file": ("rare.csv", path.read_bytes(), "text/csv")}, data={"name": "rare"}
        ).json()
        response = client.post(
            "/v1/jobs",
            json={
                "dataset_id": dataset["id"],
                "base_model": live.tiny_bert,
                "loss": {"name": "apl"},
                "hyperparameters": {"epochs": 2, "batch_size": 8, "learning_rate": 3e-3, "max_length": 32},
            },
        )
    assert response.status_code == 202, response.text
    job = live.wait_job(response.json()["id"], {"succeeded"})
    with live.client() as client:
        evaluation = client.get(f"/v1/models/{job['model_id']}/evaluation").json()
        issues = client.get(f"/v1/models/{job['model_id']}/label-issues").json()
    entries = {entry["label"]: entry for entry in evaluation["per_label"]}
    assert entries["rare"]["threshold_source"] == "fallback" and entries["rare"]["threshold_reason"]
    assert "rare" in {e["label"] for e in issues["excluded_labels"]}
    fallback = sorted(label for label, e in entries.items() if e["threshold_source"] == "fallback")

    page = open_page(f"/#/models/{job['model_id']}").page
    note = page.locator("#evidence-note li")
    note.first.wait_for()
    assert sorted(note.evaluate_all("els => els.map((e) => e.dataset.label)")) == fallback
    rare_item = page.locator('#evidence-note li[data-label="rare"]').inner_text()
    assert entries["rare"]["threshold_reason"] in rare_item
    shown = page.locator(".evaluation-table .calibration-method").all_inner_texts()
    assert sorted(shown) == sorted(e["calibration"] for e in evaluation["per_label"])
    measured = evaluation["calibration"]["ece_measured_on"]
    assert measured and measured in page.locator("#reliability-note").inner_text()
    page.locator('#suspects[data-loaded="true"]').wait_for()
    suspects = page.locator("#suspects").inner_text()
    if issues["verdict"]:
        assert "Not enough evidence" in suspects
    else:
        page.locator("#suspects-excluded summary").click()
    assert page.locator('#suspects .excluded-labels li[data-label="rare"]').inner_text().startswith("rare")
    _screenshot(page, "model-not-enough-evidence")
