"""`Client`: the HTTP API as typed Python calls.

    with Client() as client:  # APLSERVE_URL and APLSERVE_API_KEY, or Client(url, api_key)
        dataset = client.datasets.upload("movies.csv", progress=True)
        job = client.jobs.create(dataset.id, "minilm-l6", loss="apl", hyperparameters={"epochs": 3})
        job = client.jobs.wait(job.id, progress=True)
        client.models.predict(job.model_id, ["a space opera with jokes"])
        sweep = client.sweeps.wait(client.sweeps.create(dataset.id, "minilm-l6").id, progress=True)

Every refusal (problem+json) and every failure to reach the service raises
`APIError`; results are the pydantic types of `aplserve.client.schemas`. The
`resolve` method of datasets, jobs and models turns a short id (at least 6
characters, as the dashboard and the CLI show them) into the whole one.
"""

from __future__ import annotations

import base64
import builtins
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from aplserve.client.errors import APIError, IdLookupError
from aplserve.client.events import parse_events
from aplserve.client.progress import JobBar, TransferBar
from aplserve.client.schemas import (
    BaseModelEntry,
    Checkpoint,
    Dataset,
    HistoryEvent,
    Job,
    LabelIssue,
    LabelIssuePage,
    MetricPoint,
    Model,
    Page,
    Prediction,
    WebhookSecret,
)
from aplserve.client.sweeps import Sweeps
from aplserve.client.uploads import ProgressCallback, multipart_file

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV = "APLSERVE_URL"
KEY_ENV = "APLSERVE_API_KEY"
#: The fewest characters of an id that `resolve` looks up as a prefix.
MIN_ID_PREFIX = 6
FULL_ID_CHARS = 36
_HEX_ID = re.compile(r"^[0-9a-f-]+$")
USER_AGENT = "aplserve-client/0.1"
#: The event stream sends a heartbeat every 15 s; a silent minute means the connection is gone.
EVENTS_READ_TIMEOUT = 60.0

R = TypeVar("R", bound=BaseModel)
JobUpdate = Callable[[Job, MetricPoint | None], None]


@dataclass(frozen=True)
class JobEvent:
    """One event of a job's stream: a new Job snapshot (status or progress) or a new metric point."""

    kind: str
    job: Job | None = None
    metric: MetricPoint | None = None
    id: str | None = None
    #: For `history` events: the stored entry (status change, epoch, checkpoint, message).
    history: HistoryEvent | None = None


def _merged(current: Job | None, kind: str, payload: dict[str, Any]) -> Job:
    """The Job after a stream event: a status event is the whole job, a progress event what moved."""
    if kind == "status" or current is None:
        return Job.model_validate(payload)
    return Job.model_validate({**current.model_dump(mode="json"), **payload})


class Client:
    """A connection to one aplserve service, authenticated with one API key."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 30.0,
        *,
        http_client: httpx.Client | None = None,
    ) -> None:
        """`base_url` and `api_key` default to APLSERVE_URL and APLSERVE_API_KEY (else the local server)."""
        base_url = base_url or os.environ.get(URL_ENV) or DEFAULT_URL
        api_key = api_key if api_key is not None else os.environ.get(KEY_ENV) or None
        self.base_url = base_url.rstrip("/")
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        if http_client is None:
            http_client = httpx.Client(base_url=self.base_url, timeout=timeout)
        http_client.headers.update(headers)
        self._http = http_client
        self.datasets = Datasets(self)
        self.jobs = Jobs(self)
        self.models = Models(self)
        self.webhooks = Webhooks(self)
        self.sweeps = Sweeps(self)

    # --- plumbing ---------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send a request; a non-2xx answer or no answer raises APIError."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise APIError.from_transport(error, self.base_url) from error
        if response.is_error:
            raise APIError.from_response(response)
        return response

    @contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A streamed response (events, downloads); errors as in `request`."""
        try:
            with self._http.stream(method, path, **kwargs) as response:
                if response.is_error:
                    response.read()
                    raise APIError.from_response(response)
                yield response
        except httpx.TransportError as error:
            raise APIError.from_transport(error, self.base_url) from error

    def get_json(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs).json()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- service-wide -------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        body: dict[str, Any] = self.get_json("/healthz")
        return body

    def base_models(self) -> list[BaseModelEntry]:
        """Names usable as `base_model` besides `timm:<arch>` and `hf:<path>`."""
        items = self.get_json("/v1/base-models")["items"]
        return [BaseModelEntry.model_validate(item) for item in items]


def _page(model: type[R], body: Mapping[str, Any]) -> Page[R]:
    return Page[model](  # type: ignore[valid-type]
        items=[model.model_validate(item) for item in body["items"]], next_cursor=body.get("next_cursor")
    )


def _pages(fetch: Callable[[str | None], Page[R]]) -> Iterator[R]:
    cursor: str | None = None
    while True:
        page = fetch(cursor)
        yield from page.items
        if not page.next_cursor:
            return
        cursor = page.next_cursor


def _params(**values: Any) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def resolve_id(client: Client, kind: str, path: str, ref: str) -> str:
    """The whole id of the one `kind` whose id starts with `ref` (a whole id is returned as it is).

    Short ids are looked up with the list's `?id_prefix=`; none matching is a 404
    `not_found`, several an IdLookupError `ambiguous_id` naming them. Something that is
    not the start of an id goes to the server unchanged (which answers 404).
    """
    ref = ref.strip()
    prefix = ref.lower()
    if len(prefix) >= FULL_ID_CHARS or not _HEX_ID.match(prefix):
        return ref
    if len(prefix) < MIN_ID_PREFIX:
        raise IdLookupError(
            "id_too_short", f"'{ref}' is too short: give at least {MIN_ID_PREFIX} characters of the {kind} id"
        )
    body = client.get_json(path, params={"id_prefix": prefix, "limit": 10})
    ids = [str(item["id"]) for item in body["items"]]
    if not ids:
        raise APIError(404, "not_found", f"no {kind} id starts with '{ref}'")
    if len(ids) > 1:
        more = " and more" if body.get("next_cursor") else ""
        raise IdLookupError(
            "ambiguous_id",
            f"'{ref}' is the start of {len(ids)}{more} {kind} ids: {', '.join(ids)}; give more characters",
        )
    return ids[0]


class Datasets:
    def __init__(self, client: Client) -> None:
        self._client = client

    def upload(
        self,
        path: str | os.PathLike[str],
        name: str | None = None,
        *,
        progress: bool | ProgressCallback = False,
        text_column: str | None = None,
        labels_column: str | None = None,
        filename_column: str | None = None,
        label_separator: str | None = None,
        dedupe: bool = False,
    ) -> Dataset:
        """Upload a .csv, .jsonl or .zip, streamed from disk.

        The column options name the file's own columns (or JSONL keys), and
        `label_separator` what separates labels in a CSV cell (default `|`). With
        `dedupe`, identical bytes already uploaded return that dataset instead of a copy.
        `progress=True` draws a bar on stderr; a callable gets (bytes sent, file size).
        """
        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"no such file: {file}")
        fields = _params(
            name=name,
            text_column=text_column,
            labels_column=labels_column,
            filename_column=filename_column,
            label_separator=label_separator,
        )
        bar = TransferBar(f"uploading {file.name}") if progress is True else None
        callback = bar if bar is not None else (progress if callable(progress) else None)
        body = multipart_file(file, fields, progress=callback)
        with bar or nullcontext():
            response = self._client.request(
                "POST",
                "/v1/datasets",
                params={"dedupe": "true"} if dedupe else None,
                content=body.chunks,
                headers={"Content-Type": body.content_type, "Content-Length": str(body.length)},
            )
        return Dataset.model_validate(response.json())

    def resolve(self, ref: str) -> str:
        """The whole id of the dataset whose id starts with `ref` (at least 6 characters)."""
        return resolve_id(self._client, "dataset", "/v1/datasets", ref)

    def get(self, dataset_id: str) -> Dataset:
        return Dataset.model_validate(self._client.get_json(f"/v1/datasets/{dataset_id}"))

    def list(self, *, limit: int | None = None, cursor: str | None = None) -> Page[Dataset]:
        body = self._client.get_json("/v1/datasets", params=_params(limit=limit, cursor=cursor))
        return _page(Dataset, body)

    def iterate(self) -> Iterator[Dataset]:
        """Every dataset, newest first, page after page."""
        return _pages(lambda cursor: self.list(cursor=cursor))

    def delete(self, dataset_id: str) -> None:
        self._client.request("DELETE", f"/v1/datasets/{dataset_id}")


class Jobs:
    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
        self,
        dataset_id: str,
        base_model: str,
        *,
        loss: str = "apl",
        loss_params: Mapping[str, float | bool | None] | None = None,
        hyperparameters: Mapping[str, Any] | None = None,
        webhook_url: str | None = None,
        idempotency_key: str | None = None,
        decision: Mapping[str, Any] | None = None,
        calibration: str | None = None,
        name: str | None = None,
        metadata: Mapping[str, str] | None = None,
        test_fraction: float | None = None,
        test_dataset_id: str | None = None,
    ) -> Job:
        """Queue a training job. Parameters left out (or None) take the server's defaults.

        `decision`: {"policy": "max_f1"|"precision_at"|"recall_at"|"fixed", "target", "min_labels"};
        `calibration`: "auto" (the server's default), "platt", "isotonic", "temperature" or "none".
        `name` and `metadata` (up to 16 string pairs) are yours: shown with the job, never read by training.
        `test_fraction` (or `test_dataset_id`) holds out a test split that the final model is
        scored on once; the job's `best_metrics["test"]` then holds its mAP and F1.
        """
        spec: dict[str, Any] = {
            "dataset_id": dataset_id,
            "base_model": base_model,
            "loss": {"name": loss, **_params(**(loss_params or {}))},
            "hyperparameters": _params(**(hyperparameters or {})),
        }
        if decision:
            spec["decision"] = _params(**decision)
        if calibration:
            spec["calibration"] = calibration
        if webhook_url:
            spec["webhook_url"] = webhook_url
        if name:
            spec["name"] = name
        if metadata:
            spec["metadata"] = dict(metadata)
        spec.update(_params(test_fraction=test_fraction, test_dataset_id=test_dataset_id))
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return Job.model_validate(self._client.request("POST", "/v1/jobs", json=spec, headers=headers).json())

    def get(self, job_id: str) -> Job:
        return Job.model_validate(self._client.get_json(f"/v1/jobs/{job_id}"))

    def resolve(self, ref: str) -> str:
        """The whole id of the job whose id starts with `ref` (at least 6 characters)."""
        return resolve_id(self._client, "job", "/v1/jobs", ref)

    def history(self, job_id: str, *, after: int = 0, page_size: int = 100) -> Iterator[HistoryEvent]:
        """The job's stored history, oldest first, after event id `after` (every page)."""
        while True:
            body = self._client.get_json(
                f"/v1/jobs/{job_id}/events", params={"after": after, "limit": page_size}
            )
            for item in body["items"]:
                yield HistoryEvent.model_validate(item)
            if body.get("next_after") is None:
                return
            after = int(body["next_after"])

    def checkpoints(self, job_id: str) -> builtins.list[Checkpoint]:
        """The epoch checkpoints the job saved, with each epoch's metrics and which is on disk."""
        items = self._client.get_json(f"/v1/jobs/{job_id}/checkpoints")["items"]
        return [Checkpoint.model_validate(item) for item in items]

    def list(
        self,
        *,
        status: str | None = None,
        dataset_id: str | None = None,
        sweep_id: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[Job]:
        """A page of your jobs, newest first; only those in `status`, on `dataset_id`, of `sweep_id`."""
        params = _params(status=status, dataset_id=dataset_id, sweep_id=sweep_id, limit=limit, cursor=cursor)
        return _page(Job, self._client.get_json("/v1/jobs", params=params))

    def iterate(
        self, *, status: str | None = None, dataset_id: str | None = None, sweep_id: str | None = None
    ) -> Iterator[Job]:
        return _pages(
            lambda cursor: self.list(status=status, dataset_id=dataset_id, sweep_id=sweep_id, cursor=cursor)
        )

    def cancel(self, job_id: str) -> Job:
        """A queued job comes back `cancelled`; a running one `running` with cancel_requested."""
        return Job.model_validate(self._client.request("POST", f"/v1/jobs/{job_id}/cancel").json())

    def metrics(self, job_id: str) -> builtins.list[MetricPoint]:
        series = self._client.get_json(f"/v1/jobs/{job_id}/metrics")["series"]
        return [MetricPoint.model_validate(point) for point in series]

    def events(
        self, job_id: str, *, last_event_id: str | None = None, read_timeout: float = EVENTS_READ_TIMEOUT
    ) -> Iterator[JobEvent]:
        """The job's live events until it ends (the server closes the stream then)."""
        headers = {"Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        timeout = httpx.Timeout(30.0, read=read_timeout)
        with self._client.stream(
            "GET", f"/v1/jobs/{job_id}/events", headers=headers, timeout=timeout
        ) as response:
            current: Job | None = None
            for event in parse_events(response.iter_lines()):
                payload = json.loads(event.data)
                if event.event == "metric":
                    yield JobEvent("metric", metric=MetricPoint.model_validate(payload), id=event.id)
                elif event.event == "history":
                    yield JobEvent("history", history=HistoryEvent.model_validate(payload), id=event.id)
                elif event.event in ("status", "progress"):
                    current = _merged(current, event.event, payload)
                    yield JobEvent(event.event, job=current, id=event.id)

    def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        on_update: JobUpdate | None = None,
        progress: bool = False,
        poll_interval: float = 1.0,
        use_events: bool = True,
    ) -> Job:
        """Block until the job ends; returns the final Job (whatever its status).

        Follows the event stream and falls back to polling when the stream breaks.
        `progress=True` draws a bar of epochs with the latest metrics on stderr;
        `on_update(job, latest_metric_or_None)` sees every change. Raises
        TimeoutError after `timeout` seconds.
        """
        bar = JobBar(job_id) if progress else None
        with bar or nullcontext():
            return self._wait(job_id, timeout, _fan_out(on_update, bar), poll_interval, use_events)

    def _wait(
        self,
        job_id: str,
        timeout: float | None,
        update: JobUpdate,
        poll_interval: float,
        use_events: bool,
    ) -> Job:
        deadline = None if timeout is None else time.monotonic() + timeout

        def left() -> float:
            if deadline is None:
                return EVENTS_READ_TIMEOUT
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"job {job_id} did not finish within {timeout} s")
            return remaining

        job = self.get(job_id)
        update(job, None)
        last_event_id: str | None = None
        while not job.finished:
            if use_events:
                try:
                    for event in self.events(
                        job_id, last_event_id=last_event_id, read_timeout=min(left(), EVENTS_READ_TIMEOUT)
                    ):
                        last_event_id = event.id or last_event_id  # the stream resumes after it
                        if event.metric is not None:
                            update(job, event.metric)
                        elif event.job is not None:
                            job = event.job
                            update(job, None)
                        if job.finished:
                            break
                        left()
                except APIError as error:
                    if error.status and error.status < 500:
                        raise  # 401/404: polling would fail the same way
                    use_events = False  # the stream is unavailable here; poll instead
            if not job.finished:
                time.sleep(min(poll_interval, left()))
                job = self.get(job_id)
                update(job, None)
        return job


def _fan_out(*callbacks: JobUpdate | None) -> JobUpdate:
    chosen = [callback for callback in callbacks if callback is not None]

    def update(job: Job, point: MetricPoint | None) -> None:
        for callback in chosen:
            callback(job, point)

    return update


def _filename(response: httpx.Response, fallback: str) -> str:
    match = re.search(r'filename="?([^";]+)"?', response.headers.get("content-disposition", ""))
    name = Path(match.group(1)).name if match else ""
    return name or fallback


class Models:
    def __init__(self, client: Client) -> None:
        self._client = client

    def get(self, model_id: str) -> Model:
        return Model.model_validate(self._client.get_json(f"/v1/models/{model_id}"))

    def resolve(self, ref: str) -> str:
        """The whole id of the model whose id starts with `ref` (at least 6 characters)."""
        return resolve_id(self._client, "model", "/v1/models", ref)

    def list(
        self,
        *,
        dataset_id: str | None = None,
        sweep_id: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[Model]:
        """A page of your models, newest first; only those trained on `dataset_id` / made by `sweep_id`."""
        params = _params(dataset_id=dataset_id, sweep_id=sweep_id, limit=limit, cursor=cursor)
        return _page(Model, self._client.get_json("/v1/models", params=params))

    def iterate(self, *, dataset_id: str | None = None, sweep_id: str | None = None) -> Iterator[Model]:
        return _pages(lambda cursor: self.list(dataset_id=dataset_id, sweep_id=sweep_id, cursor=cursor))

    def rename(self, model_id: str, name: str | None) -> Model:
        """Name the model (1 to 128 printable characters); None gives it back its job's name."""
        response = self._client.request("PATCH", f"/v1/models/{model_id}", json={"name": name})
        return Model.model_validate(response.json())

    def delete(self, model_id: str) -> None:
        self._client.request("DELETE", f"/v1/models/{model_id}")

    def predict(
        self,
        model_id: str,
        inputs: Sequence[str | os.PathLike[str] | bytes],
        *,
        threshold: float | None = None,
        top_k: int | None = None,
        min_labels: int | None = None,
    ) -> builtins.list[Prediction]:
        """Predictions in input order. A str is a text; a path or bytes is an image (sent base64)."""
        if not inputs:
            raise ValueError("give at least one input")
        texts = [item for item in inputs if isinstance(item, str)]
        if texts and len(texts) != len(inputs):
            raise ValueError("a model takes either texts or images, not both in one call")
        payload: builtins.list[Any] = (
            texts
            if texts
            else [
                {"image_base64": base64.b64encode(_image_bytes(item)).decode("ascii")}
                for item in inputs
                if not isinstance(item, str)
            ]
        )
        body = {"inputs": payload, **_params(threshold=threshold, top_k=top_k, min_labels=min_labels)}
        answer = self._client.request("POST", f"/v1/models/{model_id}/predict", json=body).json()
        return [Prediction.model_validate(item) for item in answer["predictions"]]

    def evaluation(self, model_id: str) -> dict[str, Any]:
        """The model's stored evaluation (per-label PR curves, thresholds, calibration), as JSON."""
        body: dict[str, Any] = self._client.get_json(f"/v1/models/{model_id}/evaluation")
        return body

    def label_issues(
        self, model_id: str, *, limit: int | None = None, cursor: str | None = None
    ) -> LabelIssuePage:
        """One page of the model's validation samples ranked by label quality, most suspect first."""
        body = self._client.get_json(
            f"/v1/models/{model_id}/label-issues", params=_params(limit=limit, cursor=cursor)
        )
        return LabelIssuePage.model_validate(body)

    def iterate_label_issues(self, model_id: str) -> Iterator[LabelIssue]:
        """Every ranked validation sample, page after page."""
        cursor: str | None = None
        while True:
            page = self.label_issues(model_id, cursor=cursor)
            yield from page.items
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def download(
        self,
        model_id: str,
        destination: str | os.PathLike[str] | None = None,
        *,
        progress: bool | ProgressCallback = False,
    ) -> Path:
        """Save the model's artifact; returns its path. The SHA-256 is checked against the model's.

        `destination` is a file path or an existing directory (default: the current one).
        """
        expected = self.get(model_id).artifact
        bar = TransferBar(f"downloading {model_id[:8]}") if progress is True else None
        callback = bar if bar is not None else (progress if callable(progress) else None)
        with bar or nullcontext(), self._client.stream("GET", f"/v1/models/{model_id}/artifact") as response:
            target = Path(destination) if destination is not None else Path.cwd()
            if target.is_dir():
                target = target / _filename(response, f"{model_id}.tar")
            partial = target.with_name(target.name + ".part")
            digest, received = hashlib.sha256(), 0
            total = int(response.headers.get("content-length") or expected.size_bytes)
            try:
                with partial.open("wb") as out:
                    for chunk in response.iter_bytes():
                        out.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
                        if callback is not None:
                            callback(received, total)
                if digest.hexdigest() != expected.sha256:
                    raise APIError(
                        0,
                        "checksum_mismatch",
                        f"the downloaded artifact of model {model_id} does not match its SHA-256",
                    )
                partial.replace(target)
            finally:
                partial.unlink(missing_ok=True)
        return target


def _image_bytes(item: os.PathLike[str] | bytes) -> bytes:
    return item if isinstance(item, bytes) else Path(item).read_bytes()


class Webhooks:
    def __init__(self, client: Client) -> None:
        self._client = client

    def secret(self) -> WebhookSecret:
        """The key your jobs' webhook calls are signed with (see `verify_webhook`)."""
        return WebhookSecret.model_validate(self._client.get_json("/v1/webhooks/secret"))

    def rotate(self) -> WebhookSecret:
        return WebhookSecret.model_validate(self._client.request("POST", "/v1/webhooks/secret/rotate").json())
