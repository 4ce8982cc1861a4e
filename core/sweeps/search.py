"""The search phase of a sweep: who asks for trials, decides pruning, and starts the replicates.

A search sweep runs in two phases (spec/API.md, "Search inside a sweep"). In `search`,
each candidate has a study of `trials` child jobs (role "trial"), at most
`sweep_trials_in_flight` of them queued or running at once; each is trained on the
first seed's train/validation split and reports its per-epoch validation metric,
and the pruner may stop it early. Once every trial has ended, `replicate` starts each
candidate's best configuration on every seed (role "replicate"), scored on the test
split exactly as a sweep without a search.

The state lives in our own rows (`sweep_trials`, the trial jobs and their metric
points); the Optuna study is rebuilt from them for each decision (`apl.search` says
why not RDBStorage). `advance` is the one place that moves a search forward, and any
process may call it at any time: the API when the sweep is made, a worker when one of
its trials ends, every worker's lease sweep as a safety net (a worker that died
between ending a trial and advancing, a trial failed by the lease sweeper). It first
bumps the sweep's `advances` counter with a conditional UPDATE, which holds the row
lock (PostgreSQL) or the write lock (SQLite) until it commits, so advances of one
sweep run one at a time and each decides from what the previous one committed:
calling it twice, or from two workers at once, creates nothing twice.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from apl.search import TrialRecord, TrialState, Value, importances, propose, should_prune
from apl.spec import JobSpec
from core.broker import BrokerUnavailable
from core.db.models import Job, MetricPoint, Sweep, SweepTrial, new_id
from core.db.session import session_scope
from core.jobs import dispatch, lifecycle
from core.jobs.status import FINAL_STATUSES, JobStatus
from core.settings import Settings
from core.sweeps.spec import SweepSpec, configured, replicate_specs, search_space

log = logging.getLogger(__name__)

TRIAL = "trial"
REPLICATE = "replicate"
SEARCH_PHASE = "search"
REPLICATE_PHASE = "replicate"


@dataclass
class Trial:
    """One trial as the API shows it and the sampler reads it."""

    id: str
    candidate: int
    number: int
    job_id: str
    params: dict[str, Value]
    state: TrialState
    values: list[float] = field(default_factory=list)
    system_attrs: dict[str, Any] = field(default_factory=dict)

    def record(self) -> TrialRecord:
        return TrialRecord(
            self.number, dict(self.params), self.state, list(self.values), dict(self.system_attrs)
        )

    @property
    def value(self) -> float | None:
        return self.record().value


def trial_state(status: str, best_metrics: dict[str, Any] | None) -> TrialState:
    """A trial's state from its job: running until the job ends; complete or pruned as the worker
    recorded when it succeeded; failed when it failed or was cancelled."""
    if status not in FINAL_STATUSES:
        return "running"
    if status == JobStatus.SUCCEEDED:
        recorded = ((best_metrics or {}).get("trial") or {}).get("state")
        return "pruned" if recorded == "pruned" else "complete"
    return "failed"


def epoch_values(session: Session, job_ids: Sequence[str], metric: str) -> dict[str, list[float]]:
    """Each job's validation `metric` per epoch, in epoch order (one query)."""
    out: dict[str, dict[int, float]] = defaultdict(dict)
    if job_ids:
        column = getattr(MetricPoint, metric)
        rows = session.execute(
            select(MetricPoint.job_id, MetricPoint.epoch, column)
            .where(MetricPoint.job_id.in_(list(job_ids)))
            .order_by(MetricPoint.job_id, MetricPoint.epoch, MetricPoint.step, MetricPoint.id)
        )
        for job_id, epoch, value in rows:
            if value is not None:
                out[job_id][int(epoch)] = float(value)
    return {job_id: [by_epoch[e] for e in sorted(by_epoch)] for job_id, by_epoch in out.items()}


def load_trials(session: Session, sweep_id: str, metric: str) -> list[Trial]:
    """Every trial of the sweep with its state and values, by candidate then number (two queries)."""
    rows = session.execute(
        select(SweepTrial, Job.status, Job.best_metrics)
        .join(Job, Job.id == SweepTrial.job_id)
        .where(SweepTrial.sweep_id == sweep_id)
        .order_by(SweepTrial.candidate, SweepTrial.number)
    ).all()
    values = epoch_values(session, [row[0].job_id for row in rows], metric)
    return [
        Trial(
            id=trial.id,
            candidate=trial.candidate,
            number=trial.number,
            job_id=trial.job_id,
            params=dict(trial.params),
            state=trial_state(status, best_metrics),
            values=values.get(trial.job_id, []),
            system_attrs=dict(trial.system_attrs or {}),
        )
        for trial, status, best_metrics in rows
    ]


def insert_child(session: Session, sweep: Sweep, spec: JobSpec, role: str) -> Job:
    """A queued child job of the sweep with its first history entry (not committed, not sent).

    The sweep's spec was checked when it was made (dataset, base model, test split); a
    child of a later phase only changes hyperparameters and loss parameters within it.
    """
    job = Job(
        id=new_id(),
        owner_id=sweep.owner_id,
        dataset_id=spec.dataset_id,
        status=JobStatus.QUEUED,
        spec=spec.model_dump(mode="json"),
        progress={"epoch": 0, "epochs": spec.hyperparameters.epochs or 0, "step": 0, "steps": 0},
        cancel_requested=False,
        attempts=0,
        sweep_id=sweep.id,
        test_dataset_id=spec.test_dataset_id,
        role=role,
    )
    session.add(job)
    session.flush()
    lifecycle.record_queued(session, job.id)
    return job


def _ask(
    session: Session, sweep: Sweep, spec: SweepSpec, trials: list[Trial], settings: Settings
) -> list[str]:
    """Start trials until each candidate has `sweep_trials_in_flight` running (or none left to start).

    Candidates take turns, so their first trials are queued side by side.
    """
    assert spec.search is not None
    mine: dict[int, list[Trial]] = {
        i: [t for t in trials if t.candidate == i] for i in range(len(spec.candidates))
    }
    created: list[str] = []
    for _ in range(settings.sweep_trials_in_flight):
        for index, candidate in enumerate(spec.candidates):
            history = mine[index]
            running = sum(1 for t in history if t.state == "running")
            if len(history) >= spec.search.trials or running >= settings.sweep_trials_in_flight:
                continue
            space = search_space(spec, index)
            params = propose(spec.search, space, [t.record() for t in history], f"{sweep.id}:{index}")
            job = insert_child(session, sweep, configured(spec, candidate, params, seed=spec.seeds[0]), TRIAL)
            row = SweepTrial(
                id=new_id(),
                sweep_id=sweep.id,
                candidate=index,
                number=len(history),
                job_id=job.id,
                params=params,
            )
            row.system_attrs = {}
            session.add(row)
            session.flush()
            history.append(Trial(row.id, index, row.number, job.id, params, "running"))
            created.append(job.id)
    return created


def best_trials(spec: SweepSpec, trials: Sequence[Trial]) -> dict[int, Trial]:
    """Each candidate's best complete trial (highest validation value; the first of equals)."""
    best: dict[int, Trial] = {}
    for trial in trials:
        if trial.state != "complete" or trial.value is None:
            continue
        current = best.get(trial.candidate)
        if current is None or trial.value > (current.value or float("-inf")):
            best[trial.candidate] = trial
    return best


def _replicate(session: Session, sweep: Sweep, spec: SweepSpec, trials: list[Trial]) -> list[str]:
    """The search has ended: each candidate's best configuration on every seed; phase `replicate`.

    A candidate whose every trial failed has no configuration and no replicate, so the
    sweep fails naming it, as a sweep fails a candidate without result.
    """
    best = best_trials(spec, trials)
    configs = {index: trial.params for index, trial in best.items()}
    created = [
        insert_child(session, sweep, child.spec, REPLICATE).id for child in replicate_specs(spec, configs)
    ]
    sweep.phase = REPLICATE_PHASE
    sweep.search_result = {
        str(index): {
            "importances": importances(
                search_space(spec, index), [t.record() for t in trials if t.candidate == index]
            ),
            "config": trial.params,
            "value": trial.value,
            "number": trial.number,
            "job_id": trial.job_id,
        }
        for index, trial in best.items()
    }
    return created


def _search_over(spec: SweepSpec, trials: Sequence[Trial]) -> bool:
    assert spec.search is not None
    return len(trials) >= len(spec.candidates) * spec.search.trials and all(
        t.state != "running" for t in trials
    )


def advance(settings: Settings, sweep_id: str, *, send: bool = True) -> list[str]:
    """Move the search forward as far as its trials allow; the ids of the jobs it queued.

    With `send`, they are also sent (a broker failure leaves them to the reconciler).
    Does nothing for a sweep without a search, past its search, or cancelled.
    """
    with session_scope(settings) as session:
        locked = session.execute(
            update(Sweep)
            .where(Sweep.id == sweep_id, Sweep.phase == SEARCH_PHASE, Sweep.cancel_requested.is_(False))
            .values(advances=Sweep.advances + 1)
            .execution_options(synchronize_session=False)
        )
        if locked.rowcount != 1:  # type: ignore[attr-defined]
            return []
        sweep = session.get_one(Sweep, sweep_id)
        spec = SweepSpec.model_validate(sweep.spec)
        trials = load_trials(session, sweep_id, spec.metric)
        if _search_over(spec, trials):
            created = _replicate(session, sweep, spec, trials)
            log.info("sweep %s: search done; %d replicate job(s) queued", sweep_id, len(created))
        else:
            created = _ask(session, sweep, spec, trials, settings)
    if send and created:
        try:
            with session_scope(settings) as session:
                dispatch.send(session, settings, created)
        except BrokerUnavailable as error:
            log.warning(
                "sweep %s: could not send %d job(s) (%s); the reconciler will", sweep_id, len(created), error
            )
    return created


def advance_for_job(settings: Settings, job_id: str) -> list[str]:
    """`advance` the sweep of this trial job (nothing for another job)."""
    with session_scope(settings) as session:
        sweep_id = session.scalar(select(SweepTrial.sweep_id).where(SweepTrial.job_id == job_id))
    return [] if sweep_id is None else advance(settings, sweep_id)


def waiting_sweeps(settings: Settings) -> list[str]:
    """Search sweeps (not cancelled) with fewer trials queued or running than they may have.

    The lease sweep advances these: normally the worker that ends a trial does, but it
    may have died in between, or the trial was failed by the lease sweeper itself.
    """
    active = (
        select(func.count())
        .select_from(Job)
        .where(
            Job.sweep_id == Sweep.id, Job.role == TRIAL, Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING])
        )
        .scalar_subquery()
    )
    with session_scope(settings) as session:
        rows = session.execute(
            select(Sweep.id, Sweep.spec, active).where(
                Sweep.phase == SEARCH_PHASE, Sweep.cancel_requested.is_(False)
            )
        ).all()
    waiting = []
    for sweep_id, raw, running in rows:
        candidates = len(raw.get("candidates") or [])
        if running < candidates * settings.sweep_trials_in_flight:
            waiting.append(sweep_id)
    return waiting


def report(settings: Settings, job_id: str) -> bool:
    """After a trial's epoch is stored: whether the pruner stops it now (False for any other job).

    Keeps what the pruner recorded of the trial (Hyperband's rungs) in its row: read in one
    transaction and written in another, since on SQLite a transaction that reads first
    cannot write once another process has committed meanwhile.
    """
    with session_scope(settings) as session:
        row = session.scalar(select(SweepTrial).where(SweepTrial.job_id == job_id))
        if row is None:
            return False
        trial_id, sweep_id, candidate = row.id, row.sweep_id, row.candidate
        spec = SweepSpec.model_validate(session.get_one(Sweep, sweep_id).spec)
        trials = [t for t in load_trials(session, sweep_id, spec.metric) if t.candidate == candidate]
    assert spec.search is not None
    current = next(t for t in trials if t.job_id == job_id)
    others = [t.record() for t in trials if t.job_id != job_id]
    space = search_space(spec, candidate)
    prune, attrs = should_prune(spec.search, space, others, current.record(), _max_epochs(spec))
    if attrs != current.system_attrs:
        with session_scope(settings) as session:
            session.execute(update(SweepTrial).where(SweepTrial.id == trial_id).values(system_attrs=attrs))
    return prune


#: The evaluations a trial on a step budget (no `epochs`) is assumed to reach, for the pruner's
#: warm-up (a third of them) and Hyperband's largest resource: a step budget stops on patience,
#: so how many it takes is not known before the trial runs.
STEP_BUDGET_EVALUATIONS = 9


def _max_epochs(spec: SweepSpec) -> int:
    assert spec.search is not None
    entry = (spec.search.space or {}).get("epochs")
    high = getattr(entry, "high", None) or max(getattr(entry, "choices", None) or [0], default=0)
    if isinstance(high, int | float) and high:
        return int(high)
    return spec.hyperparameters.epochs or STEP_BUDGET_EVALUATIONS


def outcome(settings: Settings, job_id: str, state: TrialState) -> dict[str, Any]:
    """The best_metrics a finished trial job keeps: how it ended and its per-epoch values."""
    with session_scope(settings) as session:
        row = session.scalar(select(SweepTrial).where(SweepTrial.job_id == job_id))
        sweep = session.get(Sweep, row.sweep_id) if row is not None else None
        metric = SweepSpec.model_validate(sweep.spec).metric if sweep is not None else "map"
        values = epoch_values(session, [job_id], metric).get(job_id, [])
    record = TrialRecord(0, {}, state, values)
    return {"trial": {"state": state, "value": record.value, "values": values, "metric": metric}}
