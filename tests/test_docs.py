"""The manual: its generated pages match their sources and the site builds strictly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from core.settings import Settings
from core.settings_reference import DOC_PATH, render_markdown

ROOT = Path(__file__).resolve().parents[1]


def test_the_configuration_page_is_generated_from_the_settings() -> None:
    assert DOC_PATH.read_text("utf-8") == render_markdown(), "run `python -m core.settings_reference`"
    page = DOC_PATH.read_text("utf-8")
    for name, field in Settings.model_fields.items():
        assert f"`APLSERVE_{name.upper()}`" in page
        assert field.description, f"{name} has no description for the configuration page"


def test_the_site_builds_strictly_and_a_broken_link_fails_it(tmp_path: Path) -> None:
    mkdocs = [sys.executable, "-m", "mkdocs", "build", "--strict"]  # --quiet would hide the warnings
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    built = subprocess.run(
        [*mkdocs, "-d", str(tmp_path / "site")], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert built.returncode == 0, built.stderr[-3000:]
    assert (tmp_path / "site" / "configuration" / "index.html").is_file()
    # The same build over a copy of the manual with one link to a page that does not exist.
    docs = tmp_path / "docs"
    subprocess.run(["cp", "-r", str(ROOT / "docs"), str(docs)], check=True)
    (docs / "index.md").write_text((docs / "index.md").read_text() + "\n[gone](no-such-page.md)\n")
    config = tmp_path / "mkdocs.yml"
    config.write_text((ROOT / "mkdocs.yml").read_text().replace("docs_dir: docs", f"docs_dir: {docs}"))
    broken = subprocess.run(
        [*mkdocs, "-f", str(config), "-d", str(tmp_path / "broken")], env=env, capture_output=True, text=True
    )
    assert broken.returncode != 0 and "no-such-page.md" in broken.stderr
