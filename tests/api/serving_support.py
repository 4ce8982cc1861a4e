"""Trained tiny models for the registry and predict tests, without a worker.

`trained_models` trains a 2-layer BERT text model and a tiny timm image model once
per test session with `apl.training.train`, and packs each with
`apl.artifacts.publish_result`, the function the worker publishes with. `register`
then gives a test's own database and data dir a succeeded Job and a Model row for
it (the fields the worker writes), with the archive linked into
<data_dir>/artifacts/<model_id>.tar.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import threading
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from PIL import Image

from api.auth import get_or_create_owner
from core.db.models import new_id
from core.db.session import session_scope
from core.registry import ModelRecord, insert_finished_job, model_record
from core.settings import Settings
from tests.apl.synthetic import write_image_dataset, write_text_dataset, write_tiny_bert

#: A label on a single sample: too few validation positives to tune, so it keeps the global threshold.
RARE_LABEL = "rare"
TEXT_INPUTS = [
    "the cat is on a red apple",
    "bread and cheese today",
    "a very green horse with some blue bread",
    "there",
    "dog",
    "cheese cheese cheese on the red dog with a horse",
]


@dataclass(frozen=True)
class Trained:
    """A trained, packed model and the Model row the worker would write for it."""

    kind: str
    archive: Path
    record: ModelRecord
    dataset_dir: Path

    @property
    def fields(self) -> dict[str, Any]:
        return asdict(self.record)


_lock = threading.Lock()
_cache: dict[Path, dict[str, Trained]] = {}
_policy_cache: dict[Path, dict[str, Trained]] = {}


def _add_rare_label(dataset_dir: Path) -> None:
    lines = (dataset_dir / "samples.jsonl").read_text(encoding="utf-8").splitlines()
    first = json.loads(lines[0])
    first["labels"] = sorted([*first["labels"], RARE_LABEL])
    lines[0] = json.dumps(first)
    (dataset_dir / "samples.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    labels = sorted([*json.loads((dataset_dir / "labels.json").read_text()), RARE_LABEL])
    (dataset_dir / "labels.json").write_text(json.dumps(labels))


#: A text model per decision policy (`policy_models`); min_labels set where it shows.
POLICIES: dict[str, dict[str, Any]] = {
    "max_f1": {"policy": "max_f1", "min_labels": 1},
    "precision_at": {"policy": "precision_at", "target": 0.9},
    "recall_at": {"policy": "recall_at", "target": 0.9, "min_labels": 1},
    "fixed": {"policy": "fixed", "target": 0.8, "min_labels": 2},
}


def _train(
    kind: str,
    root: Path,
    base_model: str,
    dataset_dir: Path,
    decision: dict[str, Any] | None = None,
    **hyper: Any,
) -> Trained:
    from apl.artifacts import publish_result
    from apl.spec import DecisionSpec, Hyperparameters
    from apl.training import TrainConfig, train

    config = TrainConfig(
        dataset_dir=dataset_dir,
        base_model=base_model,
        hyperparameters=Hyperparameters(batch_size=16, learning_rate=2e-3, seed=0, **hyper),
        device="cpu",
        decision=DecisionSpec.model_validate(decision or {}),
    )
    result = train(config, [])
    archive = root / f"{kind}.tar"
    info = publish_result(result, archive)
    # A template: `register` gives each registration its own id and artifact path.
    record = model_record(result, info, model_id="", artifact_path="", base_model=base_model)
    return Trained(kind=kind, archive=archive, record=record, dataset_dir=dataset_dir)


def trained_models(root: Path) -> dict[str, Trained]:
    """{"text": ..., "image": ...}, trained once per `root` (a session temp dir)."""
    with _lock:
        if root not in _cache:
            import torch

            torch.set_num_threads(min(2, torch.get_num_threads()))
            root.mkdir(parents=True, exist_ok=True)
            bert = write_tiny_bert(root / "tiny-bert")
            text_dir = write_text_dataset(root / "text-data", n=48)
            _add_rare_label(text_dir)
            image_dir = write_image_dataset(root / "image-data", n=40, size=32)
            _cache[root] = {
                "text": _train("text", root, f"hf:{bert}", text_dir, epochs=3, max_length=32),
                "image": _train("image", root, "timm:test_efficientnet", image_dir, epochs=2, image_size=32),
            }
        return _cache[root]


def policy_models(root: Path) -> dict[str, Trained]:
    """One text model per entry of POLICIES (same data, base model and seed), trained once per `root`."""
    trained_models(root)
    with _lock:
        if root not in _policy_cache:
            text_dir, bert = root / "text-data", root / "tiny-bert"
            _policy_cache[root] = {
                name: _train(f"text-{name}", root, f"hf:{bert}", text_dir, decision, epochs=3, max_length=32)
                for name, decision in POLICIES.items()
            }
        return _policy_cache[root]


def register(settings: Settings, trained: Trained, owner: str, model_id: str | None = None) -> str:
    """A succeeded job and its Model row for `owner`, the archive linked into the data dir."""
    model_id = model_id or new_id()
    target = settings.files.artifact(model_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(trained.archive, target)
    except OSError:
        shutil.copyfile(trained.archive, target)
    record = replace(trained.record, id=model_id, artifact_path=settings.files.artifact_relative(model_id))
    with session_scope(settings) as session:
        owner_row = get_or_create_owner(session, owner)
        spec = {"dataset_id": new_id(), "base_model": record.base_model}
        insert_finished_job(session, record, owner_id=owner_row.id, spec=spec)
    return model_id


def sample_images(trained: Trained, count: int = 4) -> list[bytes]:
    """PNG bytes of some of the image model's dataset images (and one of another size)."""
    paths = sorted((trained.dataset_dir / "images" / "sub").glob("*.png"))[: count - 1]
    images = [path.read_bytes() for path in paths]
    odd = io.BytesIO()
    Image.new("RGB", (45, 20), (200, 40, 40)).save(odd, format="JPEG")
    return [*images, odd.getvalue()]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def pil(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")
