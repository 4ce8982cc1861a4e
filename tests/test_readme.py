"""The README is part of the product: its set-up and quickstart must stay true, and it must fit
on a screen. The quickstart block, then the CLI walkthrough of docs/client-cli.md, are run as
written (only the path of .venv differs) against a live `aplserve serve` on a free port."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from core.settings import Settings
from tests.e2e.live import LiveServer

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
CLIENT_CLI = (ROOT / "docs" / "client-cli.md").read_text(encoding="utf-8")
#: What "fits on a screen" means for the README; the manual is docs/ (make docs).
MAX_README_LINES = 250


def test_readme_opens_with_the_two_commands() -> None:
    first_block = README.split("```", 2)[1]
    commands = [line.split("#")[0].strip() for line in first_block.splitlines()[1:] if line.strip()]
    assert commands == ["make run", "make test"]


def test_the_readme_fits_and_links_every_manual_page() -> None:
    assert len(README.splitlines()) <= MAX_README_LINES
    for page in sorted((ROOT / "docs").glob("*.md")):
        if page.name not in ("index.md", "results.md", "reliability.md", "losses.md"):
            assert f"(docs/{page.name})" in README, f"the README's map lacks docs/{page.name}"


def _first_sh_block(text: str, section: str) -> str:
    body = text.split(section, 1)[1]
    return body.split("```sh", 1)[1].split("```", 1)[0]


def _walkthrough() -> str:
    """The quickstart, then the CLI walkthrough: one shell, so each sets what the next one uses."""
    return _first_sh_block(README, "## Quickstart") + _first_sh_block(CLIENT_CLI, "# Python client, CLI")


def test_every_variable_the_walkthrough_uses_is_set_before(tmp_path: Path) -> None:
    script = _walkthrough()
    assigned = set(re.findall(r"(?:^|export |\s)([A-Z_]+)=", script, flags=re.MULTILINE))
    used = set(re.findall(r"\$([A-Z_]+)", script))
    assert used <= assigned, f"used but never set: {sorted(used - assigned)}"
    assert {"KEY", "DS", "JOB", "MODEL", "IMAGES", "IMAGE_JOB", "IMAGE_MODEL"} <= assigned


def test_quickstart_runs_verbatim(tmp_path: Path) -> None:
    """Both blocks, as written (only the path of .venv differs), against `aplserve serve` with its
    embedded worker on a free port (APLSERVE_URL says which): they train a text and an image model
    and predict with both."""
    settings = Settings(data_dir=tmp_path / "var", queue_name=f"readme-{os.getpid()}")
    server = LiveServer(settings, tmp_path)
    server.start()
    try:
        assert "8000" not in _walkthrough().replace("${APLSERVE_URL:-http://127.0.0.1:8000}", "")
        script = _walkthrough().replace(".venv/bin/", f"{Path(sys.executable).parent}/")
        env = {k: v for k, v in os.environ.items() if not k.startswith("APLSERVE_")}
        env["APLSERVE_DATA_DIR"] = str(settings.data_dir)
        env["APLSERVE_URL"] = server.url
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=540,
            check=False,
        )
    finally:
        server.close()
    assert done.returncode == 0, done.stderr[-3000:] + server.log()[-3000:]
    out = done.stdout
    assert '"modality":"text"' not in out  # the upload's answer went into DS, not to the screen
    assert re.search(r'"status":"(queued|running|succeeded)"', out), out[-2000:]
    assert "event: history" in out and "event: metric" in out  # the stream, replayed and followed
    assert '"series":' in out and out.count('"epoch":2') >= 1
    predictions = re.findall(r'\{"model_id":"[^"]+","predictions":\[', out)
    assert len(predictions) == 1, out[-3000:]  # the curl predict
    assert "digits-asl" in out and "checkpoint saved after epoch 2" in out  # jobs list, jobs events
    assert "mosaic-0000.png" in out  # the image prediction's table
    assert out.rstrip().endswith("]") and '"scores"' in out  # predict --json of the text model
    assert (tmp_path / "demo" / "movies-genres.csv").is_file()


def test_the_errors_page_and_the_docs_are_linked() -> None:
    assert "[docs/errors.md](docs/errors.md)" in README and "/docs" in README and "/redoc" in README
    assert "/problems/" in README
