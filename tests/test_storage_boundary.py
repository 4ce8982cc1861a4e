"""No module of the services builds a path under the data dir itself: every file of the layout
(uploads, datasets, checkpoints, artifacts, ONNX exports, predictions, label-issue rankings)
goes through the storage interface (`settings.storage`, core.objects), so that `s3://` storage
moves all of them. Scanned from the source (ast), like the function-length rule."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("api", "core", "worker", "aplserve")
#: The modules that may name the data dir or lay it out, and why.
ALLOWED = {
    "core/files.py": "the layout itself",
    "core/objects.py": "the storage interface: file:// is the data dir",
    "core/s3.py": "the s3:// backend: its scratch and cache trees live in the data dir",
    "core/settings.py": "the setting, and the embedded database and broker files beside the layout",
    "core/broker.py": "creates the data dir for the embedded broker's SQLite file",
    "core/db/migrate.py": "creates the data dir for the embedded database",
}


def _offences(path: Path) -> list[str]:
    tree = ast.parse(path.read_text("utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("data_dir", "files"):
            owner = node.value
            if (isinstance(owner, ast.Name) and owner.id == "settings") or node.attr == "data_dir":
                found.append((node.lineno, f".{node.attr}"))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "DataFiles":
            found.append((node.lineno, "DataFiles(...)"))
    return [f"line {line}: {what}" for line, what in sorted(found)]


def test_only_the_storage_modules_name_the_data_dir() -> None:
    offences = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if relative in ALLOWED:
                continue
            if found := _offences(path):
                offences[relative] = found
    assert offences == {}, (
        "these modules reach into the data dir instead of asking `settings.storage` (core.objects) "
        f"for a path: {offences}"
    )


def test_the_scan_finds_what_it_forbids(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "def f(settings):\n"
        "    a = settings.data_dir / 'uploads'\n"
        "    b = settings.files.artifact('m')\n"
        "    return DataFiles(a), b\n"
    )
    assert _offences(sample) == ["line 2: .data_dir", "line 3: .files", "line 4: DataFiles(...)"]
