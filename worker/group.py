"""One job on several devices: the worker starts its ranks through torch's launcher and watches them.

The worker keeps what it always owns: the claim, the lease's heartbeat and the lease
sweep's exclusion of this job. It starts `python -m worker.launcher` (torchrun's
elastic agent) in a session of its own, which starts one `python -m worker.rank` per
device; rank 0 reports and publishes as a single-process run does. Meanwhile the worker
watches: its lease lost, its own warm shutdown, or a cancel that the ranks did not act
on within `CANCEL_GRACE_SECONDS` (a rank stuck loading a model) make it stop the group
(SIGTERM to the agent, which stops every rank; SIGKILL after `STOP_GRACE_SECONDS`).

How the group ended, from the ranks' outcome files (worker.rank):
    rank 0's outcome          what rank 0 did (succeeded, cancelled, released, lost)
    a rank's failure          the job fails with the most specific code any rank gave
    a rank said nothing       it was killed: like a lost worker, the job is queued again
                              to resume from its last checkpoint (counted towards
                              job_max_attempts: lifecycle.lose_training_process)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from core.jobs import lifecycle
from core.jobs.status import JobStatus, RunOutcome
from core.settings import Settings
from worker import shutdown
from worker.rank import outcome_file

log = logging.getLogger(__name__)

GROUP_POLL_SECONDS = 0.2
#: A cancel the ranks have not acted on after this long is enforced by stopping the group.
CANCEL_GRACE_SECONDS = 15.0
#: After SIGTERM, the agent's own grace for its ranks plus a margin, before SIGKILL.
STOP_GRACE_SECONDS = 40.0
#: The lease looks lost as soon as rank 0 has finished the job (it is no longer running);
#: a group that does not exit by itself this long after is stopped.
LOST_GRACE_SECONDS = 10.0

#: The launcher of the group this worker runs (tests and the shutdown path read it).
RUNNING: dict[str, subprocess.Popen[bytes]] = {}


def _command(size: int, job_file: Path, outcome_dir: Path, threads: int | None) -> list[str]:
    return [
        sys.executable,
        "-m",
        "worker.launcher",
        "--standalone",
        f"--nproc-per-node={size}",
        "--max-restarts=0",
        "--monitor-interval=0.1",
        "--module",
        "worker.rank",
        f"--job-file={job_file}",
        f"--outcome-dir={outcome_dir}",
        *([f"--torch-threads={threads}"] if threads else []),
    ]


def _rank_threads(size: int) -> int:
    """The worker's torch threads shared among its ranks (each rank is a process of its own)."""
    import torch

    return max(1, torch.get_num_threads() // size)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the agent (it stops the ranks), SIGKILL it when it takes too long (ranks follow)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        log.warning("the launcher of pid %d did not stop; killing it", process.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _watch(
    process: subprocess.Popen[bytes], job: lifecycle.ClaimedJob, settings: Settings, lost: threading.Event
) -> str | None:
    """Wait for the group to end; stop it on a lost lease, a shutdown or an unheeded cancel."""
    cancel_seen: float | None = None
    lost_seen: float | None = None
    last_poll = 0.0
    while process.poll() is None:
        reason = None
        if lost.is_set():
            lost_seen = lost_seen or time.monotonic()
            if time.monotonic() - lost_seen > LOST_GRACE_SECONDS:
                reason = "lost"
        elif shutdown.requested():
            reason = "shutdown"
        elif time.monotonic() - last_poll >= 0.5:
            last_poll = time.monotonic()
            with contextlib.suppress(Exception):  # a database hiccup: look again next time
                if cancel_seen is None and lifecycle.cancel_requested(job.id, settings):
                    cancel_seen = last_poll
        if cancel_seen is not None and time.monotonic() - cancel_seen > CANCEL_GRACE_SECONDS:
            reason = "cancel"
        if reason is not None:
            log.warning("stopping the device group of job %s (%s)", job.id, reason)
            _stop(process)
            return reason
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=GROUP_POLL_SECONDS)
    return None


def _read_outcomes(directory: Path, size: int) -> dict[int, dict[str, object]]:
    found = {}
    for rank in range(size):
        path = outcome_file(directory, rank)
        if path.is_file():
            found[rank] = json.loads(path.read_text())
    return found


def run_group(job: lifecycle.ClaimedJob, settings: Settings, lost: threading.Event, size: int) -> RunOutcome:
    """Train the claimed job on `size` ranks; how it ended (worker.runner's outcomes, plus `requeued`)."""
    from worker.runner import JobFailure

    with tempfile.TemporaryDirectory(prefix=f"aplserve-group-{job.id}-") as tmp:
        directory = Path(tmp)
        job_file = directory / "job.json"
        job_file.write_text(json.dumps(dataclasses.asdict(job)))
        command = _command(size, job_file, directory, _rank_threads(size))
        log.info("job %s trains on %d devices (torch.distributed, one process each)", job.id, size)
        env = os.environ | {"OMP_NUM_THREADS": str(_rank_threads(size))}
        process = subprocess.Popen(command, env=env, start_new_session=True)
        RUNNING[job.id] = process
        try:
            reason = _watch(process, job, settings, lost)
        finally:
            RUNNING.pop(job.id, None)
        outcomes = _read_outcomes(directory, size)
    log.info("the device group of job %s exited (%s): %s", job.id, process.returncode, outcomes)
    if reason in (None, "lost") and "outcome" in outcomes.get(0, {}):
        return RunOutcome(str(outcomes[0]["outcome"]))
    failures = [o["failure"] for o in outcomes.values() if isinstance(o.get("failure"), dict)]
    specific = [f for f in failures if f.get("code") != "internal"]
    if reason is None and (specific or (failures and len(outcomes) == size)):
        failure = (specific or failures)[0]
        raise JobFailure(str(failure["code"]), str(failure["message"]))
    return _ended_without_word(job, settings, reason)


def _ended_without_word(job: lifecycle.ClaimedJob, settings: Settings, reason: str | None) -> RunOutcome:
    """The group was stopped here, or a rank died without saying why (killed)."""
    from worker.runner import cancelled, release, send_again

    if reason == "lost":
        return RunOutcome.LOST
    if reason == "shutdown":
        release(job, settings)
        return RunOutcome.RELEASED
    if reason == "cancel":
        return cancelled(job, settings)
    log.warning("a training process of job %s died; the job is handled like a lost worker", job.id)
    status = lifecycle.lose_training_process(job.id, job.attempt, settings)
    if status == JobStatus.QUEUED:
        send_again(job.id, settings)
        return RunOutcome.REQUEUED
    if status is JobStatus.FAILED or status is JobStatus.CANCELLED:
        return RunOutcome(status.value)
    return RunOutcome.LOST
