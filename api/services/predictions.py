"""Predictions: a caller's model as the serving engine needs it, and one request's answer.

The engine (api/serving) loads a model on first use, keeps it in an LRU cache and merges
concurrent requests for one model into micro-batches; here the request's inputs (already
read and checked by the route) are decoded, sent to it, and the decision rule is applied
with the request's thresholds, top_k and min_labels.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.services import models
from api.serving.decisions import decide, resolve_thresholds
from api.serving.engine import Arrival, ModelRef, ServingEngine
from api.serving.inputs import Limits, ParsedPredict, decode_images
from api.serving.schemas import PredictResponse
from apl.errors import AplError
from core.errors import AppError
from core.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OwnedModel:
    ref: ModelRef
    labels: list[str]
    thresholds: dict[str, float]
    min_labels: int = 0


def owned_model(session: Session, settings: Settings, owner_id: str, model_id: str) -> OwnedModel:
    """The caller's model as the serving engine needs it (404 for another owner's)."""
    row = models.get_owned(session, owner_id, model_id)
    return OwnedModel(
        ref=models.serving_ref(settings, row),
        labels=[str(label) for label in row.labels],
        thresholds={str(k): float(v) for k, v in row.thresholds.items()},
        min_labels=models.min_labels(row),
    )


async def predict(
    engine: ServingEngine, target: OwnedModel, parsed: ParsedPredict, arrival: Arrival, limits: Limits
) -> PredictResponse:
    """The answer to one predict request, in input order; `arrival` is left once queued or given up.

    503 `model_unavailable` when the model cannot be loaded here, or its artifact's outputs do
    not match the labels of its registry entry.
    """
    try:
        thresholds = resolve_thresholds(target.labels, target.thresholds, parsed.threshold)
        items = parsed.items
        if parsed.kind == "image":
            items = await run_in_threadpool(decode_images, items, limits)
        probabilities = await engine.predict(target.ref, items, arrival)
    except AplError:
        log.exception("model %s cannot be served", target.ref.id)
        raise AppError(503, "model_unavailable", "the model cannot be loaded on this server") from None
    finally:
        arrival.leave()
    if probabilities.shape != (len(items), len(target.labels)):
        log.error("model %s: artifact outputs do not match the registered labels", target.ref.id)
        raise AppError(503, "model_unavailable", "the model's artifact does not match its registry entry")
    min_labels = target.min_labels if parsed.min_labels is None else parsed.min_labels
    return PredictResponse(
        model_id=target.ref.id,
        predictions=decide(probabilities, target.labels, thresholds, parsed.top_k, min_labels),
        thresholds=dict(zip(target.labels, thresholds, strict=True)),
        min_labels=min_labels,
    )
