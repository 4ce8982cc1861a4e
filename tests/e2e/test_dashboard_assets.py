"""The dashboard's HTTP side without a browser: the page, its headers, and the static assets.

Fast checks that complement the browser tests: every asset the page or a module
imports exists, nothing is loaded from another origin, the vendored chart library
ships with its license, and asset paths cannot leave the static directory.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.dashboard.router import STATIC_DIR
from api.main import create_app
from core.settings import Settings

IMPORT = re.compile(r"""(?:import|from)\s*(?:[\w{}\s,*]+from\s*)?["'](\.{1,2}/[^"']+)["']""")
UNSAFE_HTML = re.compile(r"\.(?:inner|outer)HTML\b|insertAdjacentHTML|document\.write|\beval\(|new Function")
ASSET_REF = re.compile(r"""(?:src|href)="(/static/[^"]+)\"""")


@pytest.fixture
def client(data_dir: Path) -> TestClient:
    return TestClient(create_app(Settings(data_dir=data_dir)))


def test_page_is_served_with_a_strict_content_security_policy(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert '<main id="app"' in response.text


def test_every_referenced_asset_exists_and_is_served_locally(client: TestClient) -> None:
    page = client.get("/").text
    assert "://" not in page  # no CDN, no other origin
    referenced = ASSET_REF.findall(page)
    assert "/static/vendor/chart.umd.min.js" in referenced and "/static/app.js" in referenced
    modules = sorted(STATIC_DIR.rglob("*.js"))
    for module in modules:
        if module.parent.name == "vendor":
            continue
        source = module.read_text(encoding="utf-8")
        assert not UNSAFE_HTML.search(source), f"{module.name} builds HTML from strings"
        assert "http://" not in source and "https://" not in source, module
        for target in IMPORT.findall(source):
            resolved = (module.parent / target).resolve()
            assert resolved.is_file(), f"{module.name} imports {target}, which does not exist"
            referenced.append("/static/" + resolved.relative_to(STATIC_DIR).as_posix())
    for path in set(referenced):
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.headers["x-content-type-options"] == "nosniff"
        expected = "text/css" if path.endswith(".css") else "text/javascript"
        assert response.headers["content-type"].startswith(expected), path


def test_vendored_chart_library_has_its_license_and_no_source_map_reference(client: TestClient) -> None:
    library = (STATIC_DIR / "vendor" / "chart.umd.min.js").read_text(encoding="utf-8")
    assert library.startswith("/*!\n * Chart.js v4.6.1")
    assert "sourceMappingURL" not in library  # the map is not shipped; the browser must not ask for it
    for name in ("LICENSE-chart.js.txt", "LICENSE-kurkle-color.txt"):
        response = client.get(f"/static/vendor/{name}")
        assert response.status_code == 200
        assert "MIT License" in response.text
        assert response.headers["content-type"].startswith("text/plain")


@pytest.mark.parametrize(
    "path",
    [
        "/static/",
        "/static/missing.js",
        "/static/../router.py",
        "/static/%2e%2e/router.py",
        "/static/vendor/../../router.py",
        "/static/..%2frouter.py",
        "/static/.hidden",
        "/static/pages//job.js",
    ],
)
def test_asset_paths_cannot_leave_the_static_directory(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert "router" not in response.text and str(STATIC_DIR) not in response.text
