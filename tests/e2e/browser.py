"""Chromium for the browser tests: where it is, how it is started, and what happens without it.

Debian's Chromium, headless, driven by Playwright; locally a missing browser stack skips the
test, under CI=true it fails it (the browser tests must run there).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.services import IN_CI

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "test-output" / "screenshots"
CHROMIUM = Path(os.environ.get("APLSERVE_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
VIEWPORT = {"width": 1360, "height": 900}


def require(condition: bool, message: str) -> None:
    """Skip locally, fail under CI=true, when the browser stack is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(message + " (CI=true: the browser tests must run)", pytrace=False)
    pytest.skip(message)


def require_browser() -> None:
    require(CHROMIUM.exists(), f"Chromium is not installed at {CHROMIUM} (apt-get install -y chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        require(False, "the playwright package is not installed (pip install playwright)")


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A launched headless Chromium, closed afterwards."""
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()
