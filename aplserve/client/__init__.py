"""The Python client of aplserve (httpx): typed calls for datasets, jobs, models, sweeps and webhooks.

    from aplserve.client import APIError, Client

    with Client("http://127.0.0.1:8000", api_key="aplsk_...") as client:
        job = client.jobs.wait(client.jobs.create(dataset_id, "minilm-l6").id, progress=True)

`verify_webhook(secret, raw_body, timestamp_header, signature_header)` checks a
webhook call on the receiving side.
"""

from __future__ import annotations

from aplserve.client.core import DEFAULT_URL, Client, JobEvent
from aplserve.client.errors import APIError
from aplserve.client.schemas import (
    Artifact,
    BaseModelEntry,
    Comparison,
    Dataset,
    Job,
    JobError,
    JobProgress,
    JobSpec,
    Leaderboard,
    LeaderboardRow,
    LeaderboardWinner,
    MetricPoint,
    Model,
    Page,
    Prediction,
    SeedResult,
    Sweep,
    SweepProgress,
    SweepWinner,
    WebhookSecret,
)
from core.webhooks.signing import verify_signature as verify_webhook

__all__ = [
    "DEFAULT_URL",
    "APIError",
    "Artifact",
    "BaseModelEntry",
    "Client",
    "Comparison",
    "Dataset",
    "Job",
    "JobError",
    "JobEvent",
    "JobProgress",
    "JobSpec",
    "Leaderboard",
    "LeaderboardRow",
    "LeaderboardWinner",
    "MetricPoint",
    "Model",
    "Page",
    "Prediction",
    "SeedResult",
    "Sweep",
    "SweepProgress",
    "SweepWinner",
    "WebhookSecret",
    "verify_webhook",
]
