"""Base-model names are checked without torch: timm's architecture list ships with the package
(and is regenerated when timm changes), hf: references must be model directories or allowed hub ids."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from apl import timm_names
from apl.catalog import UnknownBaseModel, check_base_model


def test_the_shipped_name_list_is_the_installed_timms() -> None:
    import timm

    version, names = timm_names._read_file()
    assert version == timm.__version__, "run `python -m apl.timm_names` after upgrading timm"
    assert names == frozenset(timm.list_models())


def test_timm_names_are_checked_with_a_suggestion() -> None:
    assert check_base_model("timm:resnet18", allow_download=False).source == "resnet18"
    assert check_base_model("timm:resnet50.a1_in1k", allow_download=False).source == "resnet50.a1_in1k"
    with pytest.raises(UnknownBaseModel, match="timm has no architecture named 'resnet999'"):
        check_base_model("timm:resnet999", allow_download=False)
    with pytest.raises(UnknownBaseModel, match=r"did you mean .*mobilenetv2_100"):
        check_base_model("timm:mobilenetv2_10", allow_download=False)


def test_checking_names_imports_no_torch() -> None:
    script = (
        "import sys; from apl.catalog import check_base_model, UnknownBaseModel\n"
        "check_base_model('timm:resnet18', allow_download=False)\n"
        "try:\n    check_base_model('timm:resnet999', allow_download=False)\nexcept UnknownBaseModel: pass\n"
        "assert 'torch' not in sys.modules and 'timm' not in sys.modules, 'imported torch'\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_another_timm_version_asks_timm_in_a_child_process(monkeypatch: pytest.MonkeyPatch) -> None:
    timm_names.timm_architectures.cache_clear()
    monkeypatch.setattr(timm_names, "installed_version", lambda: "0.0.0-not-the-list")
    try:
        names = timm_names.timm_architectures()
        assert names is not None and "resnet18" in names and "resnet999" not in names
    finally:
        timm_names.timm_architectures.cache_clear()


def test_hf_references_must_be_model_directories_or_allowed_hub_ids(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UnknownBaseModel, match=r"without config\.json"):
        check_base_model(f"hf:{tmp_path / 'empty'}", allow_download=True)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    assert check_base_model(f"hf:{tmp_path / 'model'}", allow_download=False).family == "transformers"
    with pytest.raises(UnknownBaseModel, match="is not a model directory on the server"):
        check_base_model(f"hf:{tmp_path / 'missing'}", allow_download=True)
    with pytest.raises(UnknownBaseModel, match="APLSERVE_ALLOW_MODEL_DOWNLOAD"):
        check_base_model("hf:someone/some-encoder", allow_download=False)
    assert check_base_model("hf:someone/some-encoder", allow_download=True).source == "someone/some-encoder"
    with pytest.raises(UnknownBaseModel):
        check_base_model("hf:not a hub id!", allow_download=True)


def test_every_entry_carries_training_defaults_for_its_modality() -> None:
    from apl.catalog import FAMILY_DEFAULTS, list_base_models, resolve_base_model

    for entry in list_base_models():
        defaults = entry.defaults
        assert defaults.learning_rate > 0 and defaults.epochs >= 1 and defaults.batch_size >= 1
        assert (defaults.image_size is not None) == (entry.modality == "image"), entry.name
        assert (defaults.max_length is not None) == (entry.modality == "text"), entry.name
        assert entry.as_dict()["defaults"]["learning_rate"] == defaults.learning_rate
    assert resolve_base_model("timm:resnet18").defaults == FAMILY_DEFAULTS["image"]
    assert resolve_base_model("hf:/any/dir").defaults == FAMILY_DEFAULTS["text"]
