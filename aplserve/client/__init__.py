"""The Python client of aplserve (httpx): typed calls for datasets, jobs, models, sweeps and webhooks.

    from aplserve.client import APIError, Client

    with Client() as client:  # reads APLSERVE_URL and APLSERVE_API_KEY; or Client(url, api_key=...)
        job = client.jobs.wait(client.jobs.create(dataset_id, "minilm-l6").id, progress=True)

`verify_webhook(secret, raw_body, timestamp_header, signature_header)` checks a
webhook call on the receiving side.
"""

from __future__ import annotations

from aplserve.client.core import DEFAULT_URL, Client, JobEvent
from aplserve.client.errors import APIError, IdLookupError
from aplserve.client.schemas import (
    Artifact,
    BaseModelEntry,
    Checkpoint,
    Comparison,
    Dataset,
    HistoryEvent,
    Job,
    JobError,
    JobProgress,
    JobSpec,
    LabelIssue,
    LabelIssuePage,
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
    Trial,
    TrialProgress,
    WebhookSecret,
)
from core.webhooks.signing import verify_signature as verify_webhook

__all__ = [
    "DEFAULT_URL",
    "APIError",
    "Artifact",
    "BaseModelEntry",
    "Checkpoint",
    "Client",
    "Comparison",
    "Dataset",
    "HistoryEvent",
    "IdLookupError",
    "Job",
    "JobError",
    "JobEvent",
    "JobProgress",
    "JobSpec",
    "LabelIssue",
    "LabelIssuePage",
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
    "Trial",
    "TrialProgress",
    "WebhookSecret",
    "verify_webhook",
]
