"""The Sweep and Leaderboard documents: what /v1/sweeps shows (spec/API.md, "Sweeps")."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from apl.spec import LossSpec
from core.jobs.document import JobError
from core.jobs.status import JobStatus
from core.sweeps.spec import SweepSpec

_SWEEP_ID = "5d0c3b1e-8f2a-4c7d-9e1b-2a3f4c5d6e7f"
_TIME = "2026-01-15T09:30:00.123456Z"


def _examples(*examples: dict[str, Any]) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": list(examples)})


class SweepWinner(BaseModel):
    candidate: LossSpec
    model_id: str | None = Field(description="The sweep's recommended model (its winner's best child's).")
    job_id: str | None = Field(default=None, description="The child job that trained the recommended model.")


class SweepProgress(BaseModel):
    """How many children are in each state."""

    queued: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    total: int = 0


class TrialProgress(BaseModel):
    """A search's trials: planned (`total`), ended (`done`: complete, pruned or failed), of which
    pruned and failed, and running (queued or training)."""

    total: int = 0
    done: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0


class Sweep(BaseModel):
    model_config = _examples(
        {
            "id": _SWEEP_ID,
            "status": "succeeded",
            "spec": {"dataset_id": "3f1c2a9e-6d0b-4a51-9d7e-2f4b8c1a0e55", "base_model": "minilm-l6"},
            "job_ids": ["8b7e4c1d-2f3a-4e5b-9c6d-7a8b9c0d1e2f"],
            "created_at": _TIME,
            "finished_at": _TIME,
            "winner": {"candidate": {"name": "apl"}, "model_id": "0f6e2d4c-1b3a-4958-8d7c-6e5f4a3b2c1d"},
            "progress": {
                "queued": 0,
                "running": 0,
                "succeeded": 12,
                "failed": 0,
                "cancelled": 0,
                "total": 12,
            },
            "error": None,
            "cancel_requested": False,
        }
    )

    id: str
    status: JobStatus = Field(description="Follows the children: see the README, 'Loss tournament'.")
    spec: SweepSpec
    job_ids: list[str] = Field(description="The child jobs, seed by seed, candidates in order.")
    created_at: datetime
    finished_at: datetime | None
    winner: SweepWinner | None = Field(description="Set when the leaderboard's verdict is `winner`.")
    progress: SweepProgress
    error: JobError | None = Field(description="Why a failed sweep failed: candidates left without result.")
    cancel_requested: bool = False
    candidates_reason: str | None = Field(
        default=None,
        description="Why these candidates, when the request left `candidates` out: the dataset's "
        "profile (long tail -> dbl; unknown cells or under-tagging -> hill, splc). Null when given.",
    )
    phase: Literal["search", "replicate"] | None = Field(
        default=None, description="With a search: `search` (trials), then `replicate`; null without one."
    )
    trials: TrialProgress | None = Field(default=None, description="The search's trials; null without one.")


class Trial(BaseModel):
    """One search trial: its candidate, Optuna's params, and its per-epoch validation metric."""

    model_config = _examples(
        {
            "number": 3,
            "candidate": {"name": "apl"},
            "params": {"learning_rate": 0.00031, "loss.gamma_neg": 3.2},
            "state": "pruned",
            "values": [0.41],
            "value": 0.41,
            "job_id": "8b7e4c1d-2f3a-4e5b-9c6d-7a8b9c0d1e2f",
        }
    )

    number: int = Field(description="The trial's number in its candidate's study (0, 1, ...).")
    candidate: LossSpec
    params: dict[str, Any]
    state: Literal["running", "complete", "pruned", "failed"]
    values: list[float] = Field(description="The sweep's metric on the validation split, per epoch.")
    value: float | None = Field(description="Complete: the best epoch's; otherwise the last epoch's.")
    job_id: str


class CandidateImportances(BaseModel):
    candidate: LossSpec
    importances: dict[str, float] = Field(description="Optuna's fANOVA importance per searched parameter.")


class TrialList(BaseModel):
    items: list[Trial]
    next_cursor: str | None
    importances: list[CandidateImportances] = Field(
        default_factory=list,
        description="Per candidate, once the search has ended: how much each parameter mattered to its "
        "validation value (Optuna's fANOVA; empty with fewer than two complete trials).",
    )


class SweepList(BaseModel):
    items: list[Sweep]
    next_cursor: str | None


class SeedResult(BaseModel):
    seed: int
    job_id: str
    value: float = Field(description="The sweep's metric on the test split.")
    macro_f1: float
    micro_f1: float
    map: float


class LeaderboardRow(BaseModel):
    candidate: LossSpec
    label: str = Field(description="A short name: the preset plus the parameters that differ from it.")
    n: int = Field(description="Seeds with a result.")
    mean: float | None
    sd: float | None = Field(description="Sample standard deviation over seeds; null with fewer than 2.")
    ci95: list[float] | None = Field(description="95% Student-t interval of the mean; null for n < 2.")
    per_seed: list[SeedResult]
    config: dict[str, Any] = Field(
        default_factory=dict, description="The configuration the search chose ({} without a search)."
    )
    search_value: float | None = Field(
        default=None, description="Its validation value in the search (null without a search)."
    )


class BaselineRow(BaseModel):
    """A linear baseline every child fitted on its own split, over the same seeds (never in the verdict)."""

    baseline: Literal["linear_probe", "tfidf"] = Field(description="Which baseline: marks the row as one.")
    label: str
    n: int = Field(description="Seeds with a result.")
    mean: float | None
    sd: float | None
    ci95: list[float] | None
    per_seed: list[SeedResult]


class Comparison(BaseModel):
    """Best minus runner-up, paired over test samples and seeds (shown even without a winner)."""

    candidate: LossSpec
    versus: LossSpec
    delta: float
    delta_ci95: list[float]


class LeaderboardWinner(Comparison):
    model_id: str | None
    job_id: str
    seed: int


class Leaderboard(BaseModel):
    sweep_id: str
    status: JobStatus
    metric: str
    split: Literal["test"] = "test"
    complete: bool = Field(description="Every child has ended and every candidate has a result.")
    rows: list[LeaderboardRow] = Field(description="Best mean first.")
    baseline_rows: list[BaselineRow] = Field(
        default_factory=list,
        description="The linear baselines (linear probe; TF-IDF for text) on the same test splits, "
        "best mean first; not candidates, so never in the verdict.",
    )
    verdict: Literal["winner", "no_clear_winner", "incomplete"]
    winner: LeaderboardWinner | None
    comparison: Comparison | None
    method: str = Field(description="How every number was computed (interval, resamples, RNG seed).")
