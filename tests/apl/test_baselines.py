"""Every job's linear baselines, and the linear probe a job publishes when it beats the fine-tuned model."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from apl.artifacts import read_config, save_result
from apl.baseline import FINE_TUNED, LINEAR_PROBE, TFIDF, BaselineScore, JobBaselines, fit_linear
from apl.data import load_stored_dataset
from apl.export import export_directory
from apl.inference import Predictor, load
from apl.spec import LossSpec
from apl.training import TrainResult, train
from tests.apl.test_training import image_config, text_config


def _one_step(result_config: dict[str, object]) -> dict[str, object]:
    """A forced loss: one optimizer step at a negligible learning rate from a random head."""
    return {"epochs": 1, "batch_size": 512, "learning_rate": 1e-9, "head_init": "random", **result_config}


def _check_probe_published(result: TrainResult) -> TrainResult:
    baselines = result.baselines
    assert baselines is not None and result.best_metrics is not None
    probe = result.probe
    assert probe is not None and baselines.selected == LINEAR_PROBE
    assert baselines.scores[LINEAR_PROBE].map > baselines.fine_tuned_map == result.best_metrics.map
    warning = next(w for w in baselines.warnings if w.startswith("the linear probe baseline"))
    assert f"{baselines.scores[LINEAR_PROBE].map:.3f}" in warning
    assert f"{baselines.fine_tuned_map:.3f}" in warning and "published" in warning
    assert probe.kind == LINEAR_PROBE and probe.evaluation is not None and probe.temperatures
    assert probe.best_metrics is not None and probe.best_metrics.map == baselines.scores[LINEAR_PROBE].map
    assert probe.baselines is baselines and probe.validation is not None
    return probe


def test_one_step_of_text_training_publishes_the_probe_and_says_why(
    large_text_dataset: Path, tiny_bert: str, tmp_path: Path
) -> None:
    result = train(text_config(large_text_dataset, tiny_bert, **_one_step({})))
    probe = _check_probe_published(result)
    assert result.baselines is not None and set(result.baselines.scores) == {LINEAR_PROBE, TFIDF}
    assert "vs linear probe" in result.baselines.comparison and "vs TF-IDF" in result.baselines.comparison
    # The probe is a model like any other: same artifact format, predict and ONNX export unchanged.
    directory = save_result(probe, tmp_path / "probe")
    config = read_config(directory)
    assert config["training"]["kind"] == LINEAR_PROBE and config["calibration"]["temperatures"]
    dataset = load_stored_dataset(large_text_dataset)
    assert probe.validation is not None
    texts = [dataset.inputs[int(i)] for i in probe.validation.indices]
    loaded = load(directory, device="cpu").predict_proba(texts)
    np.testing.assert_allclose(loaded, probe.validation.probs, atol=1e-4)
    (tmp_path / "onnx").mkdir()
    assert "input_ids" in export_directory(directory, tmp_path / "onnx")
    assert (tmp_path / "onnx" / "model.onnx").is_file()


def test_one_step_of_image_training_publishes_the_probe(image_dataset: Path, tmp_path: Path) -> None:
    result = train(image_config(image_dataset, **_one_step({})))
    probe = _check_probe_published(result)
    assert result.baselines is not None and set(result.baselines.scores) == {LINEAR_PROBE}
    dataset = load_stored_dataset(image_dataset)
    assert probe.validation is not None
    paths = [dataset.inputs[int(i)] for i in probe.validation.indices]
    in_memory = Predictor.from_result(probe, device="cpu").predict_proba(paths)
    np.testing.assert_allclose(in_memory, probe.validation.probs, atol=1e-4)
    loaded = load(save_result(probe, tmp_path / "probe"), device="cpu").predict_proba(paths)
    np.testing.assert_allclose(loaded, in_memory, atol=1e-5)


def test_a_fine_tuned_model_that_wins_keeps_the_job_and_the_baselines_are_recorded(
    large_text_dataset: Path, tiny_bert: str
) -> None:
    result = train(text_config(large_text_dataset, tiny_bert, epochs=5, loss=LossSpec(name="bce")))
    baselines = result.baselines
    assert baselines is not None and result.best_metrics is not None
    if baselines.scores[LINEAR_PROBE].map < result.best_metrics.map:
        assert baselines.selected == FINE_TUNED and result.probe is None
    document = baselines.as_dict()
    assert document[FINE_TUNED]["map"] == result.best_metrics.map
    assert {"features", "c", "map", "micro_f1", "macro_f1", "time_s"} <= set(document[TFIDF])
    assert document["comparison"].startswith(f"fine-tuned {result.best_metrics.map:.3f} vs ")


def test_a_test_split_scores_the_baselines_once(image_dataset: Path) -> None:
    result = train(image_config(image_dataset, **_one_step({"test_fraction": 0.25})))
    assert result.baselines is not None and result.test is not None
    test = result.baselines.scores[LINEAR_PROBE].test
    assert test is not None and test["num_samples"] == result.test.num_samples
    assert result.probe is not None and result.probe.test is not None
    assert (result.probe.test.indices == result.test.indices).all()


def test_fit_linear_folds_the_scaling_into_the_weights_and_skips_unknown_cells() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 5)) * [1.0, 10.0, 0.1, 3.0, 1.0] + [0.0, 5.0, -2.0, 0.0, 1.0]
    y = np.stack([x[:, 0] + 0.1 * x[:, 1] > 0.5, x[:, 2] < -2.0, np.zeros(120, dtype=bool)], axis=1)
    targets = y.astype(np.float64)
    targets[:10, 0] = np.nan  # unknown cells
    fit = fit_linear(x[:80], targets[:80], x[80:], targets[80:], c_grid=(1.0,))
    standardised = (x[:80] - x[:80].mean(0)) / x[:80].std(0)
    known = ~np.isnan(targets[:80, 0])
    reference = LogisticRegression(C=1.0, max_iter=2000).fit(standardised[known], y[:80][known, 0])
    expected = reference.decision_function((x[80:] - x[:80].mean(0)) / x[:80].std(0))
    np.testing.assert_allclose(fit.logits(x[80:])[:, 0], expected, atol=1e-4)
    assert (fit.coef[2] == 0).all() and fit.intercept[2] < -6  # one class only: its (clipped) prior
    assert 0.0 < fit.val_map <= 1.0


@pytest.mark.parametrize(
    ("probe", "selected", "published"), [(0.7, LINEAR_PROBE, True), (0.5, FINE_TUNED, False)]
)
def test_warnings_name_both_numbers(probe: float, selected: str, published: bool) -> None:
    score = BaselineScore(features="f", c=1.0, map=probe, micro_f1=0.5, macro_f1=0.5, time_s=0.1)
    tfidf = BaselineScore(features="t", c=1.0, map=0.65, micro_f1=0.5, macro_f1=0.5, time_s=0.1)
    summary = JobBaselines(0.6, {LINEAR_PROBE: score, TFIDF: tfidf}, selected, 0.2)
    assert (
        summary.comparison == f"fine-tuned 0.600 vs linear probe {probe:.3f} vs TF-IDF 0.650 (validation mAP)"
    )
    assert any(
        "TF-IDF baseline (validation mAP 0.650) beats the fine-tuned model (0.600)" in w
        for w in summary.warnings
    )
    assert any("published" in w for w in summary.warnings) == published


@pytest.mark.parametrize("modality", ["text", "image"])
def test_the_head_starts_from_the_probe_and_the_baselines_reuse_its_fit(
    modality: str,
    large_text_dataset: Path,
    tiny_bert: str,
    image_dataset: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """LP-FT: before any step the model is the linear probe, fitted once for the head and the baselines."""
    from apl.training import baselines as baselines_module
    from apl.training import loop

    fits: list[object] = []
    real_fit = baselines_module.fit_probe

    def counted(*args: object) -> object:
        fits.append(args)
        return real_fit(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(loop, "fit_probe", counted)
    monkeypatch.setattr(baselines_module, "fit_probe", counted)
    # One step that moves nothing, from the probe's head (image models default to a random one).
    still = {"epochs": 1, "batch_size": 512, "learning_rate": 1e-9, "head_init": "linear_probe"}
    config = (
        text_config(large_text_dataset, tiny_bert, **still)
        if modality == "text"
        else image_config(image_dataset, **still)
    )
    result = train(config)
    assert result.head_init == "linear_probe" and len(fits) == 1
    assert result.baselines is not None and result.best_metrics is not None
    probe = result.baselines.scores[LINEAR_PROBE]
    assert result.best_metrics.map == pytest.approx(probe.map, abs=1e-3)
    assert probe.time_s > 0 and result.baselines.time_s >= probe.time_s
    random = train(
        replace(config, hyperparameters=config.hyperparameters.model_copy(update={"head_init": "random"}))
    )
    assert random.head_init == "random"
    assert random.best_metrics is not None and random.best_metrics.map < result.best_metrics.map


@pytest.mark.parametrize("failure", [AttributeError, RuntimeError])
def test_a_head_start_that_cannot_be_had_leaves_a_random_head_and_the_job_trains(
    failure: type[Exception], image_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """E.g. a timm network without `forward_head(pre_logits=True)`: the same failures as the baselines'."""
    from apl.training import loop

    def unavailable(*args: object) -> None:
        raise failure("no pooled features")

    monkeypatch.setattr(loop, "fit_probe", unavailable)
    result = train(image_config(image_dataset, epochs=1, head_init="linear_probe"))
    assert result.head_init == "random" and not result.stopped and result.best_metrics is not None
    assert result.baselines is not None and LINEAR_PROBE in result.baselines.scores


def test_a_run_that_leaves_the_baselines_out_fits_none(image_dataset: Path) -> None:
    """A search trial's config: the search value is all it is for, the replicates fit the baselines."""
    result = train(replace(image_config(image_dataset, epochs=1), fit_baselines=False))
    assert result.baselines is None and result.probe is None and result.kind == FINE_TUNED
    assert result.best_metrics is not None and result.evaluation is not None
