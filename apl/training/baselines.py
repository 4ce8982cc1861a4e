"""The baselines every job fits beside its training, and the linear probe it publishes when that wins.

The base model with its pretrained weights (never the fine-tuned ones) embeds the job's own
train, validation and (when it has one) test split once: the mean-pooled text embedding or
the pooled image features, what the model's head reads. A one-vs-rest logistic regression on
those embeddings (`apl.baseline.fit_linear`, C chosen on validation mAP) is the linear probe;
for text, TF-IDF + the same regression is a second baseline. Both are scored like the
fine-tuned model (validation mAP, F1 at validation-tuned thresholds, the test split once).

A job whose `head_init` is `linear_probe` (the default) fits the probe before training, on
the model it is about to fine-tune, and starts its head from the regression (`fit_probe`,
`load_head`: linear probing then fine-tuning, Kumar et al., ICLR 2022): a random head's first
gradients would otherwise pull the pretrained features towards "no label" on sparse label
sets. The baselines after training reuse that fit; a job without it (a random head, or one
resumed from a checkpoint) embeds with a fresh copy of the base model instead.

When the probe beats the fine-tuned model on validation mAP, its regression becomes the
head of that fresh copy (frozen backbone + linear head): the result's `probe` is then a
complete TrainResult of that model, finalized like any other (temperatures, the decision
policy's thresholds, the Evaluation), which the worker publishes in the same artifact
format, so predict, calibration, ONNX export and evaluation need nothing new.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from apl.baseline import (
    FINE_TUNED,
    LINEAR_PROBE,
    TFIDF,
    BaselineScore,
    JobBaselines,
    LinearFit,
    fit_linear,
    probabilities,
    tfidf_features,
)
from apl.data import StoredDataset
from apl.evaluation import finalize
from apl.metrics import EpochMetrics, score_held_out, score_validation
from apl.models import BuiltModel, build_model
from apl.training.checkpoint import cpu_state
from apl.training.config import TrainConfig, TrainResult
from apl.training.scoring import finalized_fields, held_out_predictions, validation_predictions


class BaselinesStopped(Exception):
    """A cancel arrived while the baselines were computed."""


#: What a probe that cannot be had raises: a timm architecture without
#: `forward_head(pre_logits=True)`, or one that runs out of memory embedding. A probe, the
#: head's start or a baseline, must never fail the job it serves.
PROBE_FAILURES = (AttributeError, TypeError, NotImplementedError, RuntimeError, ValueError)


@dataclass(frozen=True)
class BaselineInputs:
    """What the baselines see of a run: its config, splits, device and cancel check."""

    config: TrainConfig
    labels: list[str]
    train_set: StoredDataset
    val_set: StoredDataset
    val_idx: np.ndarray
    device: torch.device
    precision: str
    should_stop: Callable[[], bool]
    #: An ordered loader of a split for a model (the loop's evaluation loader).
    loader: Callable[[BuiltModel, StoredDataset], DataLoader[Any]]
    test_set: StoredDataset | None = None
    test_idx: np.ndarray | None = None
    test_source: str | None = None
    #: The probe fitted before training (the head's start), reused rather than embedded again.
    probe_start: ProbeStart | None = None


@dataclass(frozen=True)
class _Features:
    #: None once the probe is fitted (ProbeStart).
    train: Any
    val: Any
    test: Any | None


@dataclass(frozen=True)
class ProbeStart:
    """The linear probe of the pretrained base model: its regression, and its features of the splits
    it is scored on (the training split's are dropped once fitted: a text job keeps this for its
    whole run, and only the training loss, kept as `train_logits`, needs them)."""

    features: _Features
    fit: LinearFit
    #: The regression's logits on the training split (the probe's reported training loss).
    train_logits: np.ndarray
    #: Seconds spent embedding and fitting (counted in the baselines' cost).
    time_s: float
    #: A CPU copy of the weights the features came from, for a model without pretrained weights
    #: (e.g. a test's `timm:` network), which gets other random ones each time it is built; None
    #: for a pretrained one, which a fresh build reproduces (the published probe's backbone).
    weights: dict[str, torch.Tensor] | None


@dataclass(frozen=True)
class _Probe:
    start: ProbeStart
    score: BaselineScore


def _autocast(inputs: BaselineInputs) -> Any:
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(inputs.precision)
    if dtype is None:
        return torch.autocast(device_type=inputs.device.type, enabled=False)
    return torch.autocast(device_type=inputs.device.type, dtype=dtype)


def _pooled(built: BuiltModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """What the model's head reads: the mean-pooled text embedding, or timm's pre-logits features."""
    module: Any = built.module
    if built.modality == "text":
        pooled: torch.Tensor = module.embed(**batch)
        return pooled
    backbone = module.backbone
    features = backbone.forward_features(batch["pixel_values"])
    pooled_features: torch.Tensor = backbone.forward_head(features, pre_logits=True)
    return pooled_features


def embed(inputs: BaselineInputs, built: BuiltModel, data: StoredDataset) -> np.ndarray:
    """The frozen model's pooled features of every sample of `data`, in order (float32)."""
    rows: list[np.ndarray] = []
    with torch.inference_mode():
        for batch, _ in inputs.loader(built, data):
            if inputs.should_stop():
                raise BaselinesStopped
            moved = {key: value.to(inputs.device) for key, value in batch.items()}
            with _autocast(inputs):
                rows.append(_pooled(built, moved).float().cpu().numpy())
    return np.concatenate(rows)


def linear_head(built: BuiltModel) -> nn.Linear | None:
    """The layer that maps pooled features to logits, when it is one plain Linear (else no probe)."""
    module: Any = built.module
    head = module.head if built.modality == "text" else module.backbone.get_classifier()
    return head if isinstance(head, nn.Linear) else None


def _score(
    inputs: BaselineInputs, fit: LinearFit, features: _Features, kind: str, elapsed: Callable[[], float]
) -> BaselineScore:
    """Validation scores at thresholds tuned there; the test split at those thresholds."""
    scores = score_validation(probabilities(fit, features.val), inputs.val_set.targets, inputs.labels)
    test = None
    if features.test is not None and inputs.test_set is not None:
        held = score_held_out(
            probabilities(fit, features.test), inputs.test_set.targets, inputs.labels, scores.thresholds
        )
        test = {
            "map": held.map,
            "micro_f1": held.micro_f1,
            "macro_f1": held.macro_f1,
            "num_samples": len(inputs.test_set),
            "source": inputs.test_source,
        }
    return BaselineScore(
        features=kind,
        c=fit.c,
        map=scores.map,
        micro_f1=scores.micro_f1,
        macro_f1=scores.macro_f1,
        time_s=elapsed(),
        test=test,
    )


def _tfidf(inputs: BaselineInputs) -> BaselineScore:
    started = time.monotonic()
    texts = [*inputs.train_set.inputs, *inputs.val_set.inputs]
    texts += list(inputs.test_set.inputs) if inputs.test_set is not None else []
    n_train, n_val = len(inputs.train_set), len(inputs.val_set)
    matrix = tfidf_features(texts, np.arange(n_train)).tocsr()
    test = matrix[n_train + n_val :] if inputs.test_set is not None else None
    features = _Features(matrix[:n_train], matrix[n_train : n_train + n_val], test)
    fit = fit_linear(features.train, inputs.train_set.targets, features.val, inputs.val_set.targets)
    return _score(inputs, fit, features, "TF-IDF word 1-2-grams", lambda: time.monotonic() - started)


def _frozen_model(config: TrainConfig, num_labels: int) -> BuiltModel:
    hp = config.hyperparameters
    return build_model(
        config.base_model,
        num_labels,
        image_size=hp.image_size,
        max_length=hp.max_length,
        allow_download=config.allow_download,
    )


def fit_probe(inputs: BaselineInputs, built: BuiltModel) -> ProbeStart | None:
    """The probe of `built`, which must still hold the pretrained weights; None when its head is
    not one Linear layer. Leaves the model in eval mode."""
    started = time.monotonic()
    if linear_head(built) is None:
        return None
    module: Any = built.module
    module.to(inputs.device).eval()
    packed_before = built.modality == "text" and bool(module.packed_inference)
    if built.modality == "text":
        module.use_packed_inference()
    try:
        test = embed(inputs, built, inputs.test_set) if inputs.test_set is not None else None
        train, val = embed(inputs, built, inputs.train_set), embed(inputs, built, inputs.val_set)
        features = _Features(train, val, test)
    finally:
        if built.modality == "text":
            module.use_packed_inference(packed_before)
    fit = fit_linear(features.train, inputs.train_set.targets, features.val, inputs.val_set.targets)
    train_logits = fit.logits(features.train)
    kept = replace(features, train=None)
    weights = None if built.info.pretrained else cpu_state(built.module)
    return ProbeStart(kept, fit, train_logits, time.monotonic() - started, weights)


def load_head(built: BuiltModel, fit: LinearFit) -> None:
    """The regression's weights and biases as the model's head (the scaling is already folded in)."""
    head = linear_head(built)
    assert head is not None, "only a model with a plain Linear head has a probe"
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(fit.coef).to(head.weight))
        head.bias.copy_(torch.from_numpy(fit.intercept).to(head.bias))


def _probe_kind(inputs: BaselineInputs, fit: LinearFit) -> str:
    return f"frozen {inputs.config.base_model} embeddings ({fit.coef.shape[1]} dims)"


def _probe(inputs: BaselineInputs) -> _Probe | None:
    """The linear probe (the one fitted before training, when there is one); None for a model
    whose head is not one Linear layer."""
    started = time.monotonic()
    start = inputs.probe_start
    earlier = start.time_s if start is not None else 0.0  # fitted before training, counted here
    if start is None:
        start = fit_probe(inputs, _frozen_model(inputs.config, len(inputs.labels)))
        if start is None:
            return None
    kind = _probe_kind(inputs, start.fit)
    score = _score(inputs, start.fit, start.features, kind, lambda: earlier + time.monotonic() - started)
    return _Probe(start, score)


def _probe_model(inputs: BaselineInputs, start: ProbeStart) -> BuiltModel:
    """What the job publishes for the probe: the weights the probe saw, with the regression as head."""
    built = _frozen_model(inputs.config, len(inputs.labels))
    if start.weights is not None:
        built.module.load_state_dict(start.weights)
    load_head(built, start.fit)
    built.module.to(inputs.device).eval()
    return built


def _mean_loss(inputs: BaselineInputs, logits: np.ndarray, targets: np.ndarray) -> float:
    """The job's loss per sample (summed over labels), as the training loop reports it (dbl built
    from the training split's frequencies, as the loop builds it)."""
    from apl.losses import build_loss

    train = inputs.train_set
    loss_fn = build_loss(
        inputs.config.loss, reduction="sum", label_counts=train.positive_counts, num_samples=len(train)
    )
    loss = loss_fn(torch.from_numpy(logits).float(), torch.from_numpy(targets).float())
    return float(loss) / max(len(targets), 1)


def _probe_result(inputs: BaselineInputs, probe: _Probe) -> TrainResult:
    """The probe as a finished TrainResult: finalized on validation, scored once on the test split."""
    config, labels, val = inputs.config, inputs.labels, inputs.val_set
    fit, features = probe.start.fit, probe.start.features
    val_logits = fit.logits(features.val)
    scores = score_validation(probabilities(fit, features.val), val.targets, labels)
    metrics = EpochMetrics(
        epoch=0,
        step=0,
        train_loss=_mean_loss(inputs, probe.start.train_logits, inputs.train_set.targets),
        val_loss=_mean_loss(inputs, val_logits, val.targets),
        map=scores.map,
        micro_f1=scores.micro_f1,
        macro_f1=scores.macro_f1,
        per_class_ap=scores.per_class_ap,
        time_s=probe.score.time_s,
        thresholds=scores.thresholds,
        fallback_labels=scores.fallback_labels,
    )
    counts = inputs.train_set.positive_counts
    final = finalize(
        val_logits, val.targets, labels, config.decision, config.calibration, label_counts=counts
    )
    fields = finalized_fields(final, labels)
    test = None
    if inputs.test_set is not None and features.test is not None:
        assert inputs.test_idx is not None and inputs.test_source is not None
        test, fields["evaluation"] = held_out_predictions(
            fit.logits(features.test),
            inputs.test_set.targets,
            labels,
            final,
            indices=inputs.test_idx,
            source=inputs.test_source,
            label_counts=counts,
            min_labels=config.decision.min_labels,
        )
    return TrainResult(
        config=config,
        model=_probe_model(inputs, probe.start),
        labels=list(labels),
        best_metrics=metrics,
        history=[metrics],
        stopped=False,
        early_stopped=False,
        epochs_completed=0,
        device=str(inputs.device),
        precision=inputs.precision,
        test=test,
        validation=validation_predictions(val_logits, val.targets, labels, final, inputs.val_idx),
        kind=LINEAR_PROBE,
        **fields,
    )


def _safe_probe(inputs: BaselineInputs) -> _Probe | None:
    """The probe, or None for a network whose pooled features cannot be had (`PROBE_FAILURES`)."""
    try:
        return _probe(inputs)
    except BaselinesStopped:
        raise
    except PROBE_FAILURES:
        return None


def with_baselines(inputs: BaselineInputs, result: TrainResult) -> TrainResult:
    """`result` with its baselines, and the probe's own result when the probe wins on validation.

    A result that was stopped or not finalized is returned as it is; a cancel during the
    baselines returns it marked stopped, like a cancel during training.
    """
    if result.stopped or result.best_metrics is None or result.evaluation is None:
        return result
    started = time.monotonic() - (inputs.probe_start.time_s if inputs.probe_start is not None else 0.0)
    try:
        scores: dict[str, BaselineScore] = {}
        probe = _safe_probe(inputs)
        if probe is not None:
            scores[LINEAR_PROBE] = probe.score
        if inputs.train_set.modality == "text":
            scores[TFIDF] = _tfidf(inputs)
        fine_tuned = result.best_metrics.map
        wins = probe is not None and probe.score.map > fine_tuned
        probe_result = _probe_result(inputs, probe) if wins and probe is not None else None
    except BaselinesStopped:
        return replace(result, stopped=True)
    summary = JobBaselines(
        fine_tuned_map=fine_tuned,
        scores=scores,
        selected=LINEAR_PROBE if probe_result is not None else FINE_TUNED,
        time_s=time.monotonic() - started,
    )
    if probe_result is not None:
        probe_result = replace(probe_result, baselines=summary)
    return replace(result, baselines=summary, probe=probe_result)
