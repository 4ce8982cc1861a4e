"""Sweeps: create (the children are made by `jobs.create`, as any job), read, list, cancel, leaderboard.

A sweep is a row with its spec; its children are ordinary jobs with `sweep_id`, and
everything else (status, end, error, winner) is computed from them by `core.sweeps`.
The leaderboard of a sweep whose children have all ended is cached in its row the
first time it is computed: nothing it depends on changes after that, except a
deleted model, so the recommended model's id is read live from its job.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from api import quotas
from api.services import idempotency, jobs
from api.services.datasets import dataset_profile
from api.services.pagination import Page, id_starts_with, paginate
from core.db.models import Dataset, Job, Sweep, new_id
from core.errors import AppError, not_found
from core.jobs import lifecycle
from core.jobs.status import FINAL_STATUSES, JobStatus
from core.objects import StorageUnavailable
from core.settings import Settings
from core.sweeps import candidates, document, leaderboard, search
from core.sweeps.spec import SweepSpec, check, child_specs
from core.sweeps.state import Child, SweepState, children_of, sweep_state

log = logging.getLogger(__name__)

#: The split whose stored predictions the leaderboard resamples.
TEST_SPLIT = "test"


def get_owned(session: Session, owner_id: str, sweep_id: str) -> Sweep:
    """The caller's sweep; another owner's id reads as missing (404, never 403)."""
    row = session.scalar(select(Sweep).where(Sweep.id == sweep_id, Sweep.owner_id == owner_id))
    if row is None:
        raise not_found("sweep")
    return row


def _replay(existing: Sweep, spec_json: dict[str, Any]) -> Sweep:
    return idempotency.replay(existing, existing.spec == spec_json, "sweep spec")


def create(
    session: Session, owner_id: str, spec: SweepSpec, idempotency_key: str | None, settings: Settings
) -> tuple[Sweep, bool, list[str]]:
    """Validate the sweep, insert it and its children (`jobs.create`, the one way jobs are made).

    Everything is checked before anything is written, so a refused sweep leaves no
    row and no job behind. Returns (sweep, created, the children to send with
    `send_children`); an Idempotency-Key already used for the same spec returns the
    first sweep and creates nothing (its unsent children are the reconciler's).
    """
    reason = _fill_candidates(session, owner_id, spec)
    spec_json = spec.model_dump(mode="json")
    idempotency.check_key(idempotency_key)
    existing = idempotency.earlier(session, Sweep, owner_id, idempotency_key)
    if existing is not None:
        return _replay(existing, spec_json), False, []
    check(spec)
    children = list(child_specs(spec))
    allow_private = settings.webhook_allow_private_addresses
    jobs.check_spec(session, owner_id, children[0].spec, settings.allow_model_download, allow_private)
    # A search queues its first trials now and the rest as trials end.
    first = len(spec.candidates) * settings.sweep_trials_in_flight if spec.search else len(children)
    quotas.check_room_for_jobs(session, owner_id, settings, first)
    sweep = Sweep(
        id=new_id(),
        owner_id=owner_id,
        spec=spec_json,
        cancel_requested=False,
        idempotency_key=idempotency_key,
        phase=search.SEARCH_PHASE if spec.search is not None else None,
        candidates_reason=reason,
    )
    sweep_id = sweep.id
    session.add(sweep)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()  # the same key at the same moment: the other request's sweep is the answer
        existing = idempotency.earlier(session, Sweep, owner_id, idempotency_key)
        if existing is None:
            raise
        return _replay(existing, spec_json), False, []
    try:
        if spec.search is not None:  # the first trials; the rest follow as trials end
            return sweep, True, search.advance(settings, sweep_id, send=False)
        created = [
            jobs.create(
                session,
                owner_id,
                child.spec,
                None,
                settings=settings,
                send=False,
                sweep_id=sweep.id,
                role=search.REPLICATE,
            )[0]
            for child in children
        ]
    except Exception:
        _abandon(session, sweep.id)
        raise
    return sweep, True, [job.id for job in created]


def _fill_candidates(session: Session, owner_id: str, spec: SweepSpec) -> str | None:
    """Candidates left out: the four presets plus what the dataset's profile calls for, and why.

    Chosen before the spec is stored (and compared on an Idempotency-Key replay), so the
    stored spec lists what runs. A missing dataset changes nothing here: `check_spec`
    refuses it with its own 404.
    """
    if "candidates" in spec.model_fields_set:
        return None
    row = session.scalar(select(Dataset).where(Dataset.id == spec.dataset_id, Dataset.owner_id == owner_id))
    if row is None:
        return None
    chosen, reason = candidates.choose(dataset_profile(row))
    spec.candidates = chosen
    return reason


def send_children(session: Session, settings: Settings, sweep_id: str, job_ids: list[str]) -> None:
    """Send the committed children; when the broker fails they stay queued for the reconciler.

    The answer is then 503 `broker_unavailable` naming the saved sweep, as POST /v1/jobs
    does for a job, and an Idempotency-Key replay returns it.
    """
    try:
        jobs.send_created(session, settings, job_ids)
    except AppError as error:
        if error.code != "broker_unavailable":
            raise
        raise AppError(
            503,
            "broker_unavailable",
            "the job queue is unavailable right now; the sweep and its jobs are saved and will be "
            "queued as soon as it is back (retrying with the same Idempotency-Key returns it)",
            headers={"Retry-After": "5", "Location": f"/v1/sweeps/{sweep_id}"},
            extra={"sweep_id": sweep_id, "job_ids": job_ids},
        ) from None


def _abandon(session: Session, sweep_id: str) -> None:
    """Undo a sweep whose children could not all be made (a quota reached midway, a database error).

    Children still queued are deleted (a worker finds no row for their message and
    skips it); one a worker already claimed is cancelled. With none left the sweep row
    goes too; otherwise it stays cancelled and gives up its Idempotency-Key, so a retry
    starts a new sweep.
    """
    session.rollback()
    session.execute(delete(Job).where(Job.sweep_id == sweep_id, Job.status == JobStatus.QUEUED))
    session.commit()
    left = list(session.scalars(select(Job.id).where(Job.sweep_id == sweep_id)))
    for job_id in left:
        lifecycle.request_cancel(session, job_id)
    if left:
        session.execute(
            update(Sweep).where(Sweep.id == sweep_id).values(cancel_requested=True, idempotency_key=None)
        )
    else:
        session.execute(delete(Sweep).where(Sweep.id == sweep_id))
    session.commit()


def list_owned(
    session: Session, owner_id: str, *, limit: int, cursor: str | None, id_prefix: str | None = None
) -> Page[Sweep]:
    statement = select(Sweep).where(Sweep.owner_id == owner_id)
    if id_prefix is not None:
        statement = statement.where(id_starts_with(Sweep.id, id_prefix))
    return paginate(session, statement, Sweep, limit=limit, cursor=cursor)


def _children(session: Session, rows: Sequence[Sweep]) -> dict[str, list[Child]]:
    """Each sweep's children, for a page of sweeps in one query."""
    by_sweep: dict[str, list[Job]] = defaultdict(list)
    ids = [row.id for row in rows]
    if ids:
        for job in session.scalars(select(Job).where(Job.sweep_id.in_(ids))):
            by_sweep[job.sweep_id or ""].append(job)
    return {
        row.id: children_of(SweepSpec.model_validate(row.spec), by_sweep[row.id], row.search_result)
        for row in rows
    }


def _state(row: Sweep, children: list[Child]) -> SweepState:
    return sweep_state(SweepSpec.model_validate(row.spec), children, row.cancel_requested, row.phase)


def cancel(session: Session, owner_id: str, sweep_id: str, settings: Settings) -> Sweep:
    """Flag the sweep and cancel every child that has not ended; commits. 409 once it has ended."""
    row = get_owned(session, owner_id, sweep_id)
    children = _children(session, [row])[row.id]
    state = _state(row, children)
    if state.ended:
        raise AppError(
            409, "sweep_finished", f"the sweep has already finished ({state.status}); nothing to cancel"
        )
    session.execute(update(Sweep).where(Sweep.id == row.id).values(cancel_requested=True))
    session.commit()
    # Read again: a search may have queued trials between the read above and the flag (after
    # it, core.sweeps.search.advance queues nothing more).
    session.refresh(row)
    children = _children(session, [row])[row.id]
    for child in children:
        if child.status in FINAL_STATUSES:
            continue
        try:
            jobs.cancel(session, owner_id, child.job_id, settings=settings)
        except AppError as error:
            if error.status != 409:  # it ended meanwhile: nothing left to cancel
                raise
    session.refresh(row)
    return row


def _load_predictions(settings: Settings, children: list[Child]) -> leaderboard.PredictionsLoader:
    from apl.predictions import SplitPredictions

    attempts = {child.job_id: child.attempts for child in children}

    def load(job_id: str) -> SplitPredictions | None:
        try:
            path = settings.storage.fetch_predictions(job_id, TEST_SPLIT, attempts.get(job_id, 0))
            if path is None:
                raise FileNotFoundError(job_id)
            return SplitPredictions.load(path)
        except (OSError, ValueError, KeyError, StorageUnavailable):
            log.warning("the test predictions of job %s cannot be read", job_id, exc_info=True)
            return None

    return load


def _live_model_ids(session: Session, board: dict[str, Any]) -> dict[str, Any]:
    """The board with the recommended model's id as it is now (None once that model was deleted)."""
    winner = board.get("winner")
    if not winner:
        return board
    model_id = session.scalar(select(Job.model_id).where(Job.id == winner["job_id"]))
    return {**board, "winner": {**winner, "model_id": model_id}}


def _board(session: Session, settings: Settings, row: Sweep, children: list[Child]) -> dict[str, Any]:
    """The leaderboard: the cached one of an ended sweep, else computed (and cached once ended)."""
    if row.leaderboard is not None:
        return _live_model_ids(session, row.leaderboard)
    state = _state(row, children)
    board = leaderboard.build(
        row.id,
        SweepSpec.model_validate(row.spec),
        children,
        state.status,
        _load_predictions(settings, children),
        search_result=row.search_result,
    )
    if state.ended:
        try:
            session.execute(
                update(Sweep).where(Sweep.id == row.id, Sweep.leaderboard.is_(None)).values(leaderboard=board)
            )
            session.commit()
        except OperationalError:  # e.g. SQLite busy with a worker: the next read caches it
            session.rollback()
    return _live_model_ids(session, board)


def get_leaderboard(
    session: Session, settings: Settings, owner_id: str, sweep_id: str
) -> document.Leaderboard:
    row = get_owned(session, owner_id, sweep_id)
    board = _board(session, settings, row, _children(session, [row])[row.id])
    return document.Leaderboard.model_validate(board)


def to_schemas(session: Session, settings: Settings, rows: Sequence[Sweep]) -> list[document.Sweep]:
    """Sweep documents for a page of rows (children in one query; winners from the leaderboards)."""
    children = _children(session, rows)
    out = []
    for row in rows:
        state = _state(row, children[row.id])
        winner = None
        if state.ended:
            won = _board(session, settings, row, children[row.id]).get("winner")
            if won:
                winner = {"candidate": won["candidate"], "model_id": won["model_id"], "job_id": won["job_id"]}
        out.append(
            document.Sweep(
                id=row.id,
                status=state.status,
                spec=SweepSpec.model_validate(row.spec),
                job_ids=[child.job_id for child in children[row.id]],
                created_at=row.created_at,
                finished_at=state.finished_at,
                winner=document.SweepWinner.model_validate(winner) if winner else None,
                progress=document.SweepProgress.model_validate(state.counts),
                error=document.JobError.model_validate(state.error) if state.error else None,
                cancel_requested=row.cancel_requested,
                phase=row.phase,  # type: ignore[arg-type]
                trials=_trial_progress(SweepSpec.model_validate(row.spec), children[row.id]),
                candidates_reason=row.candidates_reason,
            )
        )
    return out


def _trial_progress(spec: SweepSpec, children: list[Child]) -> document.TrialProgress | None:
    """Counts of the search's trials, from the trial jobs (a pruned one succeeded, marked pruned)."""
    if spec.search is None:
        return None
    mine = [c for c in children if c.role == search.TRIAL]
    states = [search.trial_state(c.status, c.best_metrics) for c in mine]
    return document.TrialProgress(
        total=len(spec.candidates) * spec.search.trials,
        done=sum(1 for state in states if state != "running"),
        pruned=states.count("pruned"),
        failed=states.count("failed"),
        running=states.count("running"),
    )


def list_trials(
    session: Session, owner_id: str, sweep_id: str, *, limit: int, cursor: str | None
) -> document.TrialList:
    """The sweep's trials by candidate then number, `limit` a page (the cursor is an offset)."""
    row = get_owned(session, owner_id, sweep_id)
    spec = SweepSpec.model_validate(row.spec)
    offset = _offset(cursor)
    trials = search.load_trials(session, row.id, spec.metric)
    page = trials[offset : offset + limit]
    items = [
        document.Trial(
            number=t.number,
            candidate=spec.candidates[t.candidate],
            params=t.params,
            state=t.state,
            values=t.values,
            value=t.value,
            job_id=t.job_id,
        )
        for t in page
    ]
    more = offset + limit < len(trials)
    found = [
        document.CandidateImportances(
            candidate=spec.candidates[int(index)], importances=chosen["importances"]
        )
        for index, chosen in sorted((row.search_result or {}).items(), key=lambda item: int(item[0]))
        if chosen.get("importances") is not None
    ]
    return document.TrialList(
        items=items, next_cursor=str(offset + limit) if more else None, importances=found
    )


def _offset(cursor: str | None) -> int:
    if cursor is None:
        return 0
    if not cursor.isdigit():
        raise AppError(400, "invalid_cursor", "the cursor is not one this list returned")
    return int(cursor)


def to_schema(session: Session, settings: Settings, row: Sweep) -> document.Sweep:
    return to_schemas(session, settings, [row])[0]
