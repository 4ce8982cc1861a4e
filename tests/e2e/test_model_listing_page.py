"""Models and jobs you can tell apart in the dashboard (issue 28), in a real browser (Chromium,
Playwright) against a live `aplserve serve`.

The models list shows each model's name, dataset, loss, role and sweep, and filters by dataset
and sweep; the jobs list marks a sweep's children and filters the same way; the model page shows
the model's name and renames it. The server runs without a worker: the jobs and the sweep are
real and stay queued, and the Model rows a worker would publish for them are written the way
core.registry writes them (nothing here needs a trained network).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from core.db.session import dispose_engines
from core.settings import Settings
from tests.e2e.browser import SCREENSHOTS, VIEWPORT
from tests.e2e.live import LiveServer, post_job, text_csv, upload
from tests.published_models import ModelRegistry as Registry
from tests.published_models import publish_model
from tests.services import unique_name

pytestmark = pytest.mark.timeout(300)

LABELS = ["animal", "color", "food"]


@pytest.fixture(scope="module")
def server(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data_dir = tmp_path_factory.mktemp("e2e-model-listing")
    settings = Settings(data_dir=data_dir, queue_name=unique_name("aplserve_e2e_q"))
    live = LiveServer(settings, data_dir, worker=False)
    live.start()
    try:
        yield live
    finally:
        live.close()
        dispose_engines()


def _publish(server: LiveServer, job_id: str, kind: str = "fine_tuned") -> str:
    """The Model row a worker would write; the job itself stays queued (no worker here)."""
    model_id = publish_model(server.settings, job_id, LABELS, kind, map_value=0.6, succeed=False)
    dispose_engines()
    return model_id


@pytest.fixture(scope="module")
def registry(server: LiveServer) -> Registry:
    with server.client() as client:
        genres = upload(client, text_csv(seed=1), "genres.csv")
        news = upload(client, text_csv(seed=2), "news-tags.csv")
        base = {"base_model": "minilm-l6", "hyperparameters": {"epochs": 1}}
        focal_job = post_job(
            client, base | {"dataset_id": genres["id"], "loss": {"name": "focal"}, "name": "genres focal"}
        )
        apl_job = post_job(client, base | {"dataset_id": news["id"], "loss": {"name": "apl"}})
        response = client.post(
            "/v1/sweeps",
            json=base
            | {"dataset_id": genres["id"], "candidates": [{"name": "bce"}, {"name": "apl"}], "seeds": [0]},
        )
        assert response.status_code == 202, response.text
        sweep = response.json()
        losses = {
            job_id: client.get(f"/v1/jobs/{job_id}").json()["spec"]["loss"]["name"]
            for job_id in sweep["job_ids"]
        }
    focal, probe = _publish(server, focal_job["id"]), _publish(server, focal_job["id"], "linear_probe")
    apl = _publish(server, apl_job["id"])
    children = {_publish(server, job_id): loss for job_id, loss in losses.items()}
    return Registry(genres, news, sweep, focal_job["id"], apl_job["id"], focal, probe, apl, children)


@dataclass
class Opened:
    context: Any
    page: Any
    errors: list[str]

    def close(self) -> None:
        # A model published here has no stored label ranking: its page's 404 for it is expected.
        unexpected = [e for e in self.errors if "404" not in e]
        assert unexpected == []
        self.context.close()


def _open(browser: Any, server: LiveServer, path: str) -> Opened:
    context = browser.new_context(viewport=VIEWPORT, base_url=server.url)
    key = server.headers["Authorization"].removeprefix("Bearer ")
    context.add_init_script(f"sessionStorage.setItem('aplserve.apiKey', {key!r});")
    page = context.new_page()
    page.set_default_timeout(20_000)
    errors: list[str] = []
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.goto(path)
    return Opened(context, page, errors)


def _screenshot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def _model_rows(page: Any) -> dict[str, list[str]]:
    """Model id -> the texts of its row's cells, once the table for the current filters is drawn."""
    rows = page.locator("#models-table tbody tr[data-model-id]")
    cells = rows.evaluate_all(
        "rs => rs.map(r => [r.dataset.modelId, ...[...r.cells].map(c => c.innerText.trim())])"
    )
    return {row[0]: row[1:] for row in cells}


def _models_shown(page: Any, count: int) -> dict[str, list[str]]:
    page.locator(f'#models-table[data-count="{count}"]').wait_for()
    return _model_rows(page)


def test_models_list_shows_name_dataset_loss_role_and_sweep_and_filters_by_dataset_and_sweep(
    browser: Any, server: LiveServer, registry: Registry
) -> None:
    opened = _open(browser, server, "/#/models")
    page = opened.page
    rows = _models_shown(page, 5)
    # Model, Name, Dataset, Loss, Base model, Role, Sweep, mAP, Job, Created
    sweep8 = registry.sweep["id"][:8]
    assert rows[registry.focal][1:7] == [
        "genres focal",
        registry.first["name"],
        "FOCAL",
        "minilm-l6",
        "—",
        "—",
    ]
    assert rows[registry.probe][1:7] == [
        "genres focal",
        registry.first["name"],
        "FOCAL",
        "minilm-l6",
        "linear probe",
        "—",
    ]
    assert rows[registry.apl][1:7] == ["—", registry.second["name"], "APL", "minilm-l6", "—", "—"]
    for model_id, loss in registry.children.items():
        assert rows[model_id][1:7] == [
            "—",
            registry.first["name"],
            loss.upper(),
            "minilm-l6",
            "replicate",
            sweep8,
        ]

    _screenshot(page, "models-list")
    page.select_option("#filter-dataset", registry.first["id"])
    page.wait_for_url(f"**/#/models?dataset_id={registry.first['id']}")
    assert set(_models_shown(page, 4)) == {registry.focal, registry.probe, *registry.children}
    page.select_option("#filter-sweep", registry.sweep["id"])
    page.wait_for_url(f"**/#/models?dataset_id={registry.first['id']}&sweep_id={registry.sweep['id']}")
    assert set(_models_shown(page, 2)) == set(registry.children)
    page.select_option("#filter-dataset", "")
    page.wait_for_url(f"**/#/models?sweep_id={registry.sweep['id']}")
    assert set(_models_shown(page, 2)) == set(registry.children)
    assert page.locator("#filter-sweep").input_value() == registry.sweep["id"]

    # A filtered list can be linked: a reload keeps the filter.
    page.goto(f"/#/models?dataset_id={registry.second['id']}")
    assert set(_models_shown(page, 1)) == {registry.apl}
    assert page.locator("#filter-dataset").input_value() == registry.second["id"]
    page.select_option("#filter-sweep", registry.sweep["id"])
    page.locator('#models-table[data-count="0"]').get_by_text("No model matches these filters.").wait_for()
    opened.close()


def test_jobs_list_marks_sweep_children_and_filters_by_dataset_and_sweep(
    browser: Any, server: LiveServer, registry: Registry
) -> None:
    opened = _open(browser, server, "/#/jobs")
    page = opened.page
    page.locator("#jobs-table[data-loaded=true]").wait_for()
    children = registry.sweep["job_ids"]
    for job_id in children:
        marker = page.locator(f'tr[data-job-id="{job_id}"] .sweep-marker')
        assert marker.inner_text() == f"sweep {registry.sweep['id'][:8]} · replicate"
        assert marker.get_by_role("link").get_attribute("href") == f"#/sweeps/{registry.sweep['id']}"
    for job_id in (registry.focal_job, registry.apl_job):
        assert page.locator(f'tr[data-job-id="{job_id}"] .sweep-marker').count() == 0
    _screenshot(page, "jobs-list-sweep-children")

    page.select_option("#filter-sweep", registry.sweep["id"])
    page.wait_for_url(f"**/#/jobs?sweep_id={registry.sweep['id']}")
    page.locator("#jobs-table[data-loaded=true]").wait_for()
    shown = page.locator("#jobs-body tr[data-job-id]").evaluate_all("rs => rs.map(r => r.dataset.jobId)")
    assert sorted(shown) == sorted(children)
    page.select_option("#filter-sweep", "")
    page.select_option("#filter-dataset", registry.second["id"])
    page.wait_for_url(f"**/#/jobs?dataset_id={registry.second['id']}")
    page.locator("#jobs-table[data-loaded=true]").wait_for()
    shown = page.locator("#jobs-body tr[data-job-id]").evaluate_all("rs => rs.map(r => r.dataset.jobId)")
    assert shown == [registry.apl_job]
    opened.close()


def test_the_model_page_shows_the_name_and_renames_the_model(
    browser: Any, server: LiveServer, registry: Registry
) -> None:
    opened = _open(browser, server, f"/#/models/{registry.focal}")
    page = opened.page
    assert page.locator("#model-name").inner_text() == "genres focal"
    subtitle = page.locator(".page-header .subtitle").inner_text()
    assert registry.first["name"] in subtitle and "FOCAL" in subtitle

    page.get_by_role("button", name="Rename").click()
    assert page.locator("#model-name-input").input_value() == "genres focal"
    page.locator("#model-name-input").fill("genres v2 <b>focal</b>")
    page.locator("#model-name-save").click()
    page.locator("#model-name").get_by_text(
        "genres v2 <b>focal</b>", exact=True
    ).wait_for()  # text, not markup
    assert page.locator("#rename-form").is_hidden()
    _screenshot(page, "model-renamed")
    with server.client() as client:
        assert client.get(f"/v1/models/{registry.focal}").json()["name"] == "genres v2 <b>focal</b>"

    page.goto("/#/models")
    rows = _models_shown(page, 5)
    assert rows[registry.focal][1] == "genres v2 <b>focal</b>" and rows[registry.probe][1] == "genres focal"

    page.goto(f"/#/models/{registry.focal}")
    page.get_by_role("button", name="Rename").click()
    page.get_by_role("button", name="Use the job's name").click()
    page.locator("#model-name").get_by_text("genres focal", exact=True).wait_for()
    with server.client() as client:
        assert client.get(f"/v1/models/{registry.focal}").json()["name"] == "genres focal"

    # A sweep child has no name until given one: the page says "Model <id>" and marks its sweep.
    child = next(iter(registry.children))
    page.goto(f"/#/models/{child}")
    page.locator("#model-title").get_by_text(f"Model {child[:8]}").wait_for()
    assert (
        page.locator(".page-header .sweep-marker").inner_text()
        == f"sweep {registry.sweep['id'][:8]} · replicate"
    )
    page.get_by_role("button", name="Rename").click()
    page.locator("#model-name-input").fill("bce seed 0")
    page.locator("#model-name-input").press("Enter")
    page.locator("#model-name").get_by_text("bce seed 0", exact=True).wait_for()
    opened.close()


def test_a_sweep_and_a_dataset_link_to_their_models(
    browser: Any, server: LiveServer, registry: Registry
) -> None:
    opened = _open(browser, server, f"/#/sweeps/{registry.sweep['id']}")
    page = opened.page
    page.locator("#sweep-models").click()
    page.wait_for_url(f"**/#/models?sweep_id={registry.sweep['id']}")
    assert set(_models_shown(page, 2)) == set(registry.children)
    page.goto(f"/#/datasets/{registry.second['id']}")
    page.locator("#dataset-models").click()
    page.wait_for_url(f"**/#/models?dataset_id={registry.second['id']}")
    assert set(_models_shown(page, 1)) == {registry.apl}
    opened.close()
