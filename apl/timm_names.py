"""timm's architecture names without importing timm (which imports torch): for the API's job check.

`timm_architectures.txt` beside this module lists `timm.list_models()` of the timm
version on its first line; `python -m apl.timm_names` rewrites it after a timm
upgrade (a test fails until then). When the installed timm is another version than
the list's, the names are read once from a short-lived `python -c` child process, so
the calling process still never imports torch.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path

log = logging.getLogger(__name__)

NAMES_FILE = Path(__file__).with_name("timm_architectures.txt")
VERSION_PREFIX = "# timm "
#: Importing timm and torch takes a few seconds on a small machine; past this, give up.
CHILD_TIMEOUT_S = 60.0
_LIST_SCRIPT = "import json, timm; print(json.dumps(timm.list_models()))"


def installed_version() -> str | None:
    try:
        return metadata.version("timm")
    except metadata.PackageNotFoundError:
        return None


def _read_file() -> tuple[str, frozenset[str]]:
    lines = NAMES_FILE.read_text(encoding="utf-8").splitlines()
    version = lines[0].removeprefix(VERSION_PREFIX).strip() if lines else ""
    return version, frozenset(line.strip() for line in lines[1:] if line.strip())


def _from_child() -> frozenset[str] | None:
    try:
        done = subprocess.run(
            [sys.executable, "-c", _LIST_SCRIPT],
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT_S,
            check=True,
        )
        return frozenset(json.loads(done.stdout))
    except (OSError, subprocess.SubprocessError, ValueError):
        log.warning(
            "could not list timm's architectures; timm: names are checked by the worker", exc_info=True
        )
        return None


@lru_cache(maxsize=1)
def timm_architectures() -> frozenset[str] | None:
    """Every architecture name of the installed timm; None when that cannot be told (no timm, no answer)."""
    version = installed_version()
    if version is None:
        return None
    listed_version, names = _read_file()
    if listed_version == version:
        return names
    log.info(
        "timm %s is installed but the name list is for timm %s; asking timm itself", version, listed_version
    )
    return _from_child()


def architecture_of(name: str) -> str:
    """`resnet50.a1_in1k` -> `resnet50`: the architecture without a pretrained tag, as timm splits it."""
    return name.split(".", 1)[0]


def write_names_file() -> Path:
    """Regenerate the list from the installed timm (imports it, so torch too)."""
    import timm

    lines = [f"{VERSION_PREFIX}{timm.__version__}", *timm.list_models()]
    NAMES_FILE.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return NAMES_FILE


if __name__ == "__main__":
    print(write_names_file())
