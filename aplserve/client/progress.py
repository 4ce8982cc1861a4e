"""Progress bars (rich, on stderr) for uploads, downloads and a job's epochs."""

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

from aplserve.client.schemas import Job, MetricPoint


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
            if job.status == "succeeded"
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
