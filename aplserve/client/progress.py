"""Progress bars (rich, on stderr) for uploads, downloads, a job's epochs and a sweep's children."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

from aplserve.client.schemas import Job, MetricPoint, Sweep
from core.jobs.status import JobStatus


def stderr_console() -> Console:
    return Console(stderr=True)


class TransferBar:
    """Bytes sent or received: use as a context manager, call it with (done, total)."""

    def __init__(self, description: str, console: Console | None = None) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=console or stderr_console(),
            transient=False,
        )
        self._task: TaskID = self._progress.add_task(description, total=None)

    def __enter__(self) -> TransferBar:
        self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()

    def __call__(self, done: int, total: int) -> None:
        self._progress.update(self._task, completed=done, total=total or None)


def describe_metrics(point: MetricPoint | None) -> str:
    if point is None:
        return ""
    parts = [f"mAP {point.map:.3f}" if point.map is not None else None]
    parts.append(f"micro-F1 {point.micro_f1:.3f}" if point.micro_f1 is not None else None)
    parts.append(f"val loss {point.val_loss:.4f}" if point.val_loss is not None else None)
    return "  ".join(part for part in parts if part)


class JobBar:
    """Epochs of a job (fractional, from steps) with its status and latest evaluation.

    Pass an instance as `on_update` to `Client.jobs.wait`.
    """

    def __init__(self, job_id: str, console: Console | None = None) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[metrics]}"),
            console=console or stderr_console(),
        )
        self._job_id = job_id
        self._task = self._progress.add_task(
            f"job {job_id[:8]} queued", total=None, epoch=0, epochs="?", metrics=""
        )
        self._metrics = ""

    def __enter__(self) -> JobBar:
        self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()

    def __call__(self, job: Job, point: MetricPoint | None) -> None:
        if point is not None:
            self._metrics = describe_metrics(point)
        p = job.progress
        epochs = p.epochs or job.spec.hyperparameters.get("epochs") or 0
        done = (
            float(epochs)
            if job.status == JobStatus.SUCCEEDED
            else (p.step / p.steps * epochs if p.steps else float(p.epoch))
        )
        self._progress.update(
            self._task,
            description=f"job {self._job_id[:8]} {job.status}",
            total=epochs or None,
            completed=done,
            epoch=p.epoch,
            epochs=epochs or "?",
            metrics=self._metrics,
        )


def child_label(job: Job) -> str:
    """`apl seed 1`: a sweep child by its loss and seed."""
    loss = job.spec.loss.get("name", "?")
    return f"{loss} seed {job.spec.hyperparameters.get('seed', '?')}"


def _fraction(job: Job) -> float:
    """How much of a child is done, 0 to 1 (an ended child counts whole)."""
    if job.finished:
        return 1.0
    p = job.progress
    if p.steps:
        return min(p.step / p.steps, 1.0)
    return p.epoch / p.epochs if p.epochs else 0.0


class SweepBar:
    """A sweep's children while they run: one bar for the whole sweep, one line per child.

    Pass an instance as `on_update` to `Client.sweeps.wait`: it gets (sweep, children).
    """

    def __init__(self, sweep_id: str, console: Console | None = None) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console or stderr_console(),
        )
        self._sweep_id = sweep_id
        self._total = self._progress.add_task(f"sweep {sweep_id[:8]} queued", total=None, detail="")
        self._children: dict[str, TaskID] = {}

    def __enter__(self) -> SweepBar:
        self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()

    def __call__(self, sweep: Sweep, children: list[Job]) -> None:
        counts = sweep.progress
        detail = f"{counts.ended}/{counts.total} jobs ended"
        if counts.failed or counts.cancelled:
            detail += f" ({counts.failed} failed, {counts.cancelled} cancelled)"
        self._progress.update(
            self._total,
            description=f"sweep {self._sweep_id[:8]} {sweep.status}",
            total=counts.total or None,
            completed=sum(_fraction(job) for job in children),
            detail=detail,
        )
        for job in children:
            if job.status == JobStatus.QUEUED and job.id not in self._children:
                continue  # a line appears once a child starts
            task = self._children.get(job.id)
            if task is None:
                task = self._children[job.id] = self._progress.add_task("", total=1.0, detail="")
            test = (job.best_metrics or {}).get("test") or {}
            metric = (
                f"test mAP {test['map']:.3f}"
                if "map" in test
                else f"epoch {job.progress.epoch}/{job.progress.epochs}"
            )
            self._progress.update(
                task,
                description=f"  {child_label(job)} {job.status}",
                completed=_fraction(job),
                detail=metric,
            )
