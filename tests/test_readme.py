"""The README is part of the product: its set-up, configuration table and quickstart must
stay true. The quickstart block is run as written (only the port and the path of .venv
differ) against a live `aplserve serve`."""

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


def test_readme_opens_with_the_two_commands() -> None:
    first_block = README.split("```", 2)[1]
    commands = [line.split("#")[0].strip() for line in first_block.splitlines()[1:] if line.strip()]
    assert commands == ["make run", "make test"]


def test_every_setting_is_in_the_configuration_table() -> None:
    for name in Settings.model_fields:
        assert f"`APLSERVE_{name.upper()}`" in README, f"APLSERVE_{name.upper()} is not documented"


def _quickstart() -> str:
    section = README.split("## Quickstart", 1)[1]
    return section.split("```sh", 1)[1].split("```", 1)[0]


def test_quickstart_runs_verbatim(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "var", queue_name=f"readme-{os.getpid()}")
    server = LiveServer(settings, tmp_path, worker=False)
    server.start()
    try:
        script = _quickstart().replace("http://127.0.0.1:8000", server.url)
        script = script.replace(".venv/bin/", f"{Path(sys.executable).parent}/")
        env = {k: v for k, v in os.environ.items() if not k.startswith("APLSERVE_")}
        env["APLSERVE_DATA_DIR"] = str(settings.data_dir)
        # -N streams forever: bound the events call, then show what each step printed.
        script = script.replace("curl -sN", "curl -sN --max-time 3")
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
    finally:
        server.close()
    # curl --max-time ends the event stream with 28; everything before it must have worked.
    assert done.returncode in (0, 28), done.stderr[-2000:]
    out = done.stdout
    assert '"modality":"text"' in out and '"num_samples":1500' in out, out[:2000]
    assert re.search(r'"status":"(queued|running|succeeded)"', out), out[-2000:]
    assert '"series":' in out
    assert (tmp_path / "demo" / "movies-genres.csv").is_file()
