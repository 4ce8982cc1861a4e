"""/docs and /redoc render in Chromium with every request off this machine refused: their
scripts and styles come from the package (api/apidocs/static), not from a CDN.

`aplserve serve --no-worker` runs as a subprocess on a free loopback port; Playwright
aborts any request whose host is not the server's own, and the test fails if any was
even attempted.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from core.settings import Settings
from tests.e2e.live import LiveServer

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("docs-offline")
    settings = Settings(data_dir=root / "var", queue_name=f"docs-{os.getpid()}")
    live = LiveServer(settings, root, worker=False)
    live.start()
    try:
        yield live
    finally:
        live.close()


def offline_page(browser: Any, server: LiveServer) -> tuple[Any, list[str], list[str]]:
    """A page whose requests to anywhere but the server are aborted (and listed), and its script errors."""
    own = urlsplit(server.url).netloc
    context = browser.new_context()
    refused: list[str] = []
    errors: list[str] = []

    def route(request_route: Any) -> None:
        url = request_route.request.url
        if urlsplit(url).scheme in ("data", "blob") or urlsplit(url).netloc == own:
            request_route.continue_()
        else:
            refused.append(url)
            request_route.abort("internetdisconnected")

    context.route("**/*", route)
    page = context.new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    return page, refused, errors


def test_swagger_ui_renders_offline(browser: Any, server: LiveServer) -> None:
    page, refused, errors = offline_page(browser, server)
    page.goto(f"{server.url}/docs")
    page.wait_for_selector(".opblock-summary-path[data-path='/v1/jobs']", timeout=30_000)
    assert "aplserve" in page.title()
    assert page.locator(".opblock").count() >= 20  # every operation is listed
    page.locator("#operations-jobs-create_job_v1_jobs_post .opblock-summary").click()
    page.wait_for_selector("#operations-jobs-create_job_v1_jobs_post .responses-table", timeout=10_000)
    responses = page.locator("#operations-jobs-create_job_v1_jobs_post .responses-table").inner_text()
    # Errors are typed problem+json, and the 422's description names the route's codes.
    assert "application/problem+json" in responses and "unknown_base_model" in responses
    assert refused == [] and errors == [], (refused, errors)
    page.context.close()


def test_redoc_renders_offline(browser: Any, server: LiveServer) -> None:
    page, refused, errors = offline_page(browser, server)
    page.goto(f"{server.url}/redoc")
    page.wait_for_selector("text=Upload a dataset", timeout=30_000)
    assert "aplserve" in page.title()
    assert page.locator("text=suspicious_label_separator").count() >= 1  # the upload's documented codes
    assert refused == [] and errors == [], (refused, errors)
    page.context.close()


def test_the_docs_pages_reference_only_local_assets(server: LiveServer) -> None:
    import httpx

    for path in ("/docs", "/redoc"):
        html = httpx.get(f"{server.url}{path}", timeout=10).text
        assert "://" not in html, html
        for asset in ("/docs/assets/",):
            assert asset in html
    static = Path(__file__).resolve().parents[2] / "api" / "apidocs" / "static"
    for licence in ("LICENSE-swagger-ui.txt", "NOTICE-swagger-ui.txt", "LICENSE-redoc.txt", "README.txt"):
        assert (static / licence).is_file()


def test_package_data_ships_every_vendored_file() -> None:
    """A wheel holds only what pyproject's package-data globs match: every asset must match one."""
    import fnmatch
    import tomllib

    root = Path(__file__).resolve().parents[2]
    patterns = tomllib.loads((root / "pyproject.toml").read_text("utf-8"))["tool"]["setuptools"][
        "package-data"
    ]["*"]
    for directory in (root / "api" / "apidocs" / "static", root / "api" / "dashboard" / "static"):
        for path in directory.rglob("*"):
            if path.is_file():
                assert any(fnmatch.fnmatch(path.name, pattern) for pattern in patterns), path


def test_serve_says_where_the_dashboard_and_the_docs_are(server: LiveServer) -> None:
    assert server.process is not None
    server.process.wait_for_log(f"API docs   {server.url}/docs  (ReDoc: {server.url}/redoc)")
    assert f"aplserve is up:\n  dashboard  {server.url}/\n" in server.log()
