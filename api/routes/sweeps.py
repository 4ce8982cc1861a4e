"""/v1/sweeps: the loss tournament (create, list, read, cancel, leaderboard)."""

from __future__ import annotations

from functools import partial
from typing import Annotated

from fastapi import Query, Request, Response
from sqlalchemy.orm import Session

from api.deps import DatabaseDep, IdempotencyKeyHeader, IdPrefixQuery, OwnerDep, SessionDep, SettingsDep
from api.routing import APIRouter
from api.schemas import LIST_PROBLEMS, problem_responses
from api.services import sweeps as service
from api.services.pagination import DEFAULT_LIMIT, MAX_LIMIT
from api.state import app_state
from core.sweeps.document import Leaderboard, Sweep, SweepList, TrialList
from core.sweeps.spec import SweepSpec

router = APIRouter(prefix="/v1/sweeps", tags=["sweeps"], responses=problem_responses("unauthorized"))


@router.post(
    "",
    status_code=202,
    response_model=Sweep,
    responses=problem_responses(
        "validation_error",
        "dataset_not_found",
        "unknown_base_model",
        "modality_mismatch",
        "label_unknown_in_training",
        "empty_candidates",
        "duplicate_candidate",
        "empty_seeds",
        "duplicate_seed",
        "invalid_seed",
        "seed_in_hyperparameters",
        "too_many_children",
        "too_many_trials",
        "empty_search_space",
        "invalid_search_space",
        "missing_test_split",
        "conflicting_test_split",
        "dataset_too_small",
        "test_dataset_not_held_out",
        "test_labels_mismatch",
        "invalid_idempotency_key",
        "idempotency_key_reused",
        "quota_exceeded",
        "rate_limited",
        "broker_unavailable",
    ),
)
async def create_sweep(
    request: Request,
    spec: SweepSpec,
    response: Response,
    principal: OwnerDep,
    settings: SettingsDep,
    database: DatabaseDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Sweep:
    """Compare losses on your data: one child job per candidate and seed, scored on a test split.

    For one seed every candidate gets the same train/validation/test split and the same
    data order. The test split is never used for early stopping or threshold tuning.
    The children are ordinary jobs (they appear in /v1/jobs with `sweep_id`).
    """

    def commit(session: Session) -> tuple[str, bool, list[str]]:
        sweep, created, unsent = service.create(session, principal.owner_id, spec, idempotency_key, settings)
        return sweep.id, created, unsent

    # As POST /v1/jobs: commit and answer on the routes' threads, wait for the broker on
    # threads of its own, so that a hung broker holds up only the requests that send.
    sweep_id, created, unsent = await database.run(commit)
    if unsent:
        send = partial(service.send_children, settings=settings, sweep_id=sweep_id, job_ids=unsent)
        await database.run(send, limiter=app_state(request.app).send_limiter)
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = f"/v1/sweeps/{sweep_id}"
    return await database.run(  # not read_only: an ended sweep's document caches its leaderboard
        lambda session: service.to_schema(
            session, settings, service.get_owned(session, principal.owner_id, sweep_id)
        ),
    )


@router.get("", response_model=SweepList, responses=problem_responses(*LIST_PROBLEMS))
def list_sweeps(
    principal: OwnerDep,
    session: SessionDep,
    settings: SettingsDep,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    id_prefix: IdPrefixQuery = None,
) -> SweepList:
    """The caller's sweeps, newest first."""
    page = service.list_owned(session, principal.owner_id, limit=limit, cursor=cursor, id_prefix=id_prefix)
    return SweepList(items=service.to_schemas(session, settings, page.items), next_cursor=page.next_cursor)


@router.get("/{sweep_id}", response_model=Sweep, responses=problem_responses("not_found"))
def get_sweep(sweep_id: str, principal: OwnerDep, session: SessionDep, settings: SettingsDep) -> Sweep:
    return service.to_schema(session, settings, service.get_owned(session, principal.owner_id, sweep_id))


@router.post(
    "/{sweep_id}/cancel",
    status_code=202,
    response_model=Sweep,
    responses=problem_responses("not_found", "sweep_finished"),
)
def cancel_sweep(sweep_id: str, principal: OwnerDep, session: SessionDep, settings: SettingsDep) -> Sweep:
    """Cancel every child that has not ended; 409 `sweep_finished` once the sweep has ended."""
    row = service.cancel(session, principal.owner_id, sweep_id, settings)
    return service.to_schema(session, settings, row)


@router.get("/{sweep_id}/leaderboard", response_model=Leaderboard, responses=problem_responses("not_found"))
def sweep_leaderboard(
    sweep_id: str, principal: OwnerDep, session: SessionDep, settings: SettingsDep
) -> Leaderboard:
    """Per candidate: mean, sd and 95% interval of the test metric over seeds; best first.

    Partial while children run (verdict `incomplete`). Once the sweep succeeded, the
    best and the runner-up are compared by a paired bootstrap over test samples and
    seeds; `winner` is set only when the 95% interval of the difference excludes 0.
    """
    return service.get_leaderboard(session, settings, principal.owner_id, sweep_id)


@router.get(
    "/{sweep_id}/trials", response_model=TrialList, responses=problem_responses("not_found", "invalid_cursor")
)
def sweep_trials(
    sweep_id: str,
    principal: OwnerDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> TrialList:
    """A search sweep's trials, by candidate then number: params, state, per-epoch validation values.

    A pruned trial was stopped early by the pruner (its value is its last epoch's); a
    failed one failed or was cancelled. Empty for a sweep without a search.
    """
    return service.list_trials(session, principal.owner_id, sweep_id, limit=limit, cursor=cursor)
