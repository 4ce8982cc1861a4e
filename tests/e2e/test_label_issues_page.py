"""The dashboard's "Suspect labels" section in a real browser (Chromium, Playwright) against a
live `aplserve serve` whose embedded worker trains a tiny BERT on a partially annotated
keyword dataset with planted label flips.

The dataset page must show the unknown cells, then the model's validation samples in the
API's rank order with the labels the model disagrees on marked, page on with "More", and
the CSV download must hold every ranked sample. The page is copied to docs/label-issues.png
for the README when that file is missing or APLSERVE_UPDATE_DOCS_SCREENSHOT=1 is set.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.db.session import dispose_engines
from core.settings import Settings
from tests.apl.synthetic import write_tiny_bert
from tests.e2e.browser import REPO, SCREENSHOTS, VIEWPORT
from tests.e2e.live import LiveServer, image_zip, post_job, upload, wait_for_job
from tests.services import unique_name

pytestmark = pytest.mark.timeout(300)

KEYWORDS = {
    "animal": ["cat", "dog", "horse", "cow"],
    "color": ["red", "blue", "green", "yellow"],
    "food": ["apple", "bread", "cheese", "rice"],
    "tool": ["hammer", "saw", "drill", "wrench"],
}
FILLER = ["the", "a", "is", "on", "with", "today", "there", "very", "some", "near"]
SAMPLES = 200
#: Every FLIP_EVERY-th sample gets one label toggled against its words (added or removed).
FLIP_EVERY = 10
UNKNOWN_SHARE = 0.15
PAGE = 25  # pages/suspects.js


def partial_csv(seed: int = 0) -> tuple[bytes, dict[int, str], dict[str, int]]:
    """Keyword texts with an `unknown` column: the CSV, the planted flips (index -> label) and
    the unknown count per label. A flipped cell is never hidden."""
    rng = np.random.default_rng(seed)
    labels = list(KEYWORDS)
    flips: dict[int, str] = {}
    unknown_counts = dict.fromkeys(labels, 0)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["text", "labels", "unknown"])
    for i in range(SAMPLES):
        true = [name for name in labels if rng.random() < 0.4] or [labels[i % len(labels)]]
        words = [str(rng.choice(FILLER)) for _ in range(4)] + [str(rng.choice(KEYWORDS[n])) for n in true]
        rng.shuffle(words)
        given = set(true)
        if i % FLIP_EVERY == FLIP_EVERY // 2:
            flips[i] = str(rng.choice(labels))
            given ^= {flips[i]}
        hidden = [n for n in labels if n != flips.get(i) and rng.random() < UNKNOWN_SHARE]
        for name in hidden:
            unknown_counts[name] += 1
        given -= set(hidden)
        writer.writerow([" ".join(words), "|".join(sorted(given)), "|".join(hidden)])
    return out.getvalue().encode(), flips, unknown_counts


@pytest.fixture(scope="module")
def server(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data_dir = tmp_path_factory.mktemp("e2e-label-issues")
    live = LiveServer(Settings(data_dir=data_dir, queue_name=unique_name("aplserve_e2e_q")), data_dir)
    live.start()
    try:
        yield live
    finally:
        live.close()
        dispose_engines()


Trained = tuple[dict[str, Any], str, dict[int, str], dict[str, int]]


def _trained(server: LiveServer, tmp_path: Path) -> Trained:
    """Upload the partial dataset and train on it; returns the dataset, the model id, the flips
    and the unknown counts."""
    content, flips, unknown_counts = partial_csv()
    tiny_bert = f"hf:{write_tiny_bert(tmp_path / 'tiny-bert')}"
    with server.client() as client:
        dataset = upload(client, content, "partial-tags.csv")
        hp = {"epochs": 10, "batch_size": 8, "learning_rate": 3e-3, "max_length": 24, "seed": 0}
        spec = {"dataset_id": dataset["id"], "base_model": tiny_bert, "loss": {"name": "apl"}}
        job = post_job(client, spec | {"hyperparameters": hp | {"val_fraction": 0.3}})
        done = wait_for_job(client, job["id"], timeout=240)
    assert done["status"] == "succeeded", done.get("error")
    return dataset, str(done["model_id"]), flips, unknown_counts


def _all_issues(server: LiveServer, model_id: str) -> list[dict[str, Any]]:
    with server.client() as client:
        response = client.get(f"/v1/models/{model_id}/label-issues", params={"limit": 200})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["next_cursor"] is None
    items: list[dict[str, Any]] = body["items"]
    return items


def _open(browser: Any, server: LiveServer, path: str) -> tuple[Any, Any, list[str]]:
    """A signed-in page at `path` (what the sign-in form stores), recording console errors."""
    context = browser.new_context(viewport=VIEWPORT, base_url=server.url, accept_downloads=True)
    key = server.headers["Authorization"].removeprefix("Bearer ")
    context.add_init_script(f"sessionStorage.setItem('aplserve.apiKey', {key!r});")
    page = context.new_page()
    page.set_default_timeout(20_000)
    errors: list[str] = []
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path)
    return context, page, errors


def _check_rows(page: Any, items: list[dict[str, Any]]) -> None:
    """The table shows `items` in rank order, each disagreement marked with its direction."""
    rows = page.locator("#suspects-table tbody tr")
    assert rows.count() == len(items)
    shown = rows.evaluate_all("rs => rs.map(r => [Number(r.dataset.rank), Number(r.dataset.index)])")
    assert shown == [[item["rank"], item["index"]] for item in items]
    for i, item in enumerate(items):
        row = rows.nth(i)
        marked = row.locator(".disagreements .chip.disagree").evaluate_all(
            "cs => cs.map(c => [c.dataset.label, c.dataset.given === 'true'])"
        )
        assert marked == [[d["label"], d["given"]] for d in item["disagreements"]]
        rejected = row.locator(".given .chip.disagree").evaluate_all("cs => cs.map(c => c.dataset.label)")
        # (the given labels keep the sample's order; the disagreements are ranked by the model)
        assert sorted(rejected) == sorted(d["label"] for d in item["disagreements"] if d["given"])
        if i < 3:
            assert row.locator(".sample-text").inner_text() == item["text"]


def _screenshot(page: Any) -> None:
    """The section (its first page) for the README; refreshed on request only, so runs leave git clean.
    Clipped from the full page, where the sticky navigation bar stays at the top."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / "label-issues.png"
    page.evaluate("window.scrollTo(0, 0)")
    box = page.locator("#suspects").locator("xpath=..").bounding_box()
    page.screenshot(path=str(path), full_page=True, clip=box)
    readme_image = REPO / "docs" / "label-issues.png"
    if os.environ.get("APLSERVE_UPDATE_DOCS_SCREENSHOT") == "1" or not readme_image.exists():
        shutil.copyfile(path, readme_image)


def test_dataset_page_lists_suspect_labels_with_disagreements_marked_and_downloads_the_csv(
    server: LiveServer, browser: Any, tmp_path: Path
) -> None:
    dataset, model_id, flips, unknown_counts = _trained(server, tmp_path)
    assert dataset["unknown_counts"] == unknown_counts
    items = _all_issues(server, model_id)
    assert len(items) > 2 * PAGE  # three pages in the browser
    planted = [item["rank"] for item in items if item["index"] in flips]
    assert planted, "no planted flip fell in the validation split"
    # The flips rank near the top (measured: 4 in validation at ranks 1, 2, 3 and 29 of 60).
    assert sum(rank <= len(items) // 10 for rank in planted) * 2 >= len(planted), planted

    context, page, errors = _open(browser, server, f"/#/datasets/{dataset['id']}")
    page.locator(f'#suspects[data-loaded="true"][data-model-id="{model_id}"]').wait_for()

    cells = SAMPLES * len(KEYWORDS)
    assert page.locator("#unknown-cells").inner_text() == (
        f"{dataset['unknown_cells']} ({dataset['unknown_cells'] / cells * 100:.1f}%)"
    )
    table = page.locator(".labels-table tbody tr")
    shown_unknown = table.evaluate_all("rs => rs.map(r => [r.cells[0].innerText, +r.cells[3].innerText])")
    assert dict(shown_unknown) == unknown_counts
    summary = page.locator("#suspects-summary").inner_text()
    assert f"{len(items)} validation samples" in summary and "Only validation samples are checked" in summary

    _check_rows(page, items[:PAGE])
    _screenshot(page)
    page.locator("#suspects-more").click()
    page.locator(f'#suspects[data-shown="{2 * PAGE}"]').wait_for()
    page.locator("#suspects-more").click()
    page.locator(f'#suspects[data-shown="{len(items)}"]').wait_for()
    assert page.locator("#suspects-more").is_hidden()
    _check_rows(page, items)

    with page.expect_download() as info:
        page.locator("#suspects-csv").click()
    assert info.value.suggested_filename == f"label-issues-{model_id}.csv"
    rows = list(csv.DictReader(io.StringIO(Path(info.value.path()).read_text(encoding="utf-8"))))
    assert [(int(r["rank"]), int(r["index"])) for r in rows] == [(i["rank"], i["index"]) for i in items]
    for row, item in zip(rows, items, strict=True):
        assert row["text"] == item["text"] and row["given_labels"] == "|".join(item["given_labels"])
        assert row["model_rejects"] == "|".join(d["label"] for d in item["disagreements"] if d["given"])
        assert row["model_adds"] == "|".join(d["label"] for d in item["disagreements"] if not d["given"])
    page.get_by_text(f"Saved label-issues-{model_id}.csv ({len(items)} samples)").wait_for()

    print(f"planted flips in validation: {len(planted)}, their ranks of {len(items)}: {planted}")
    assert errors == []
    context.close()


def test_model_page_shows_image_samples_as_thumbnails(server: LiveServer, browser: Any) -> None:
    """Image rankings: each row's thumbnail is the dataset's stored image, fetched with the key."""
    with server.client() as client:
        dataset = upload(client, image_zip(40), "squares.zip")
        hp = {"epochs": 2, "batch_size": 8, "learning_rate": 3e-3, "image_size": 32, "val_fraction": 0.3}
        spec = {"dataset_id": dataset["id"], "base_model": "timm:resnet10t", "loss": {"name": "apl"}}
        job = wait_for_job(client, post_job(client, spec | {"hyperparameters": hp})["id"], timeout=240)
        assert job["status"] == "succeeded", job.get("error")
        body = client.get(f"/v1/models/{job['model_id']}/label-issues", params={"limit": PAGE}).json()
    context, page, errors = _open(browser, server, f"/#/models/{job['model_id']}")
    page.locator('#suspects[data-loaded="true"]').wait_for()
    thumbs = page.locator("#suspects-table tbody tr .thumb")
    assert thumbs.count() == len(body["items"]) > 0
    page.locator('#suspects-table .thumb[data-loaded="true"]').nth(len(body["items"]) - 1).wait_for()
    shown = thumbs.evaluate_all("ts => ts.map(t => [Number(t.dataset.index), t.naturalWidth, t.alt])")
    assert shown == [[item["index"], 32, item["image"].removeprefix("images/")] for item in body["items"]]
    assert page.locator("#suspects-table .sample-text").count() == 0
    assert errors == []
    context.close()
