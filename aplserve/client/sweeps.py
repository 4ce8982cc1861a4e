"""`client.sweeps`: loss tournaments (create, get, list, leaderboard, trials, wait, cancel).

sweep = client.sweeps.create(dataset.id, "minilm-l6", hyperparameters={"epochs": 2})
sweep = client.sweeps.wait(sweep.id, progress=True)      # one line per running child
board = client.sweeps.leaderboard(sweep.id)
print(board.verdict, board.winner.model_id if board.winner else None)
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

from aplserve.client.progress import SweepBar
from aplserve.client.schemas import Job, Leaderboard, Page, Sweep, Trial

if TYPE_CHECKING:
    from aplserve.client.core import Client

SweepUpdate = Callable[[Sweep, list[Job]], None]
#: A candidate: a preset name, or a loss spec with parameter overrides ({"name": "asl", "gamma_neg": 2}).
Candidate = str | Mapping[str, Any]


def _candidate(value: Candidate) -> dict[str, Any]:
    return {"name": value} if isinstance(value, str) else {k: v for k, v in value.items() if v is not None}


class Sweeps:
    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
        self,
        dataset_id: str,
        base_model: str,
        *,
        candidates: Sequence[Candidate] | None = None,
        seeds: Sequence[int] | None = None,
        hyperparameters: Mapping[str, Any] | None = None,
        test_fraction: float | None = None,
        test_dataset_id: str | None = None,
        metric: str | None = None,
        idempotency_key: str | None = None,
        search: Mapping[str, Any] | None = None,
    ) -> Sweep:
        """Start a sweep; what is left out (or None) takes the server's defaults:
        the four presets, seeds [0, 1, 2], test_fraction 0.2, metric "map", no search.

        `search` ({"trials": 8, "space": {...}, "sampler", "pruner"}) tunes each candidate first."""
        spec: dict[str, Any] = {"dataset_id": dataset_id, "base_model": base_model}
        if candidates is not None:
            spec["candidates"] = [_candidate(c) for c in candidates]
        if seeds is not None:
            spec["seeds"] = list(seeds)
        if hyperparameters:
            spec["hyperparameters"] = {k: v for k, v in hyperparameters.items() if v is not None}
        if test_fraction is not None:
            spec["test_fraction"] = test_fraction
        if test_dataset_id is not None:
            spec["test_dataset_id"] = test_dataset_id
        if metric is not None:
            spec["metric"] = metric
        if search is not None:
            spec["search"] = dict(search)
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        response = self._client.request("POST", "/v1/sweeps", json=spec, headers=headers)
        return Sweep.model_validate(response.json())

    def get(self, sweep_id: str) -> Sweep:
        return Sweep.model_validate(self._client.get_json(f"/v1/sweeps/{sweep_id}"))

    def resolve(self, ref: str) -> str:
        """The whole id of the sweep whose id starts with `ref` (at least 6 characters)."""
        from aplserve.client.core import resolve_id

        return resolve_id(self._client, "sweep", "/v1/sweeps", ref)

    def list(self, *, limit: int | None = None, cursor: str | None = None) -> Page[Sweep]:
        params = {k: v for k, v in {"limit": limit, "cursor": cursor}.items() if v is not None}
        body = self._client.get_json("/v1/sweeps", params=params)
        return Page[Sweep](
            items=[Sweep.model_validate(item) for item in body["items"]], next_cursor=body.get("next_cursor")
        )

    def iterate(self) -> Iterator[Sweep]:
        """Every sweep, newest first, page after page."""
        cursor: str | None = None
        while True:
            page = self.list(cursor=cursor)
            yield from page.items
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def leaderboard(self, sweep_id: str) -> Leaderboard:
        """Partial (verdict `incomplete`) while children run; the verdict once the sweep succeeded."""
        return Leaderboard.model_validate(self._client.get_json(f"/v1/sweeps/{sweep_id}/leaderboard"))

    def trials(self, sweep_id: str) -> builtins.list[Trial]:
        """Every search trial of the sweep, by candidate then number (empty without a search)."""
        trials: builtins.list[Trial] = []
        cursor: str | None = None
        while True:
            params = {"limit": 200, **({"cursor": cursor} if cursor else {})}
            body = self._client.get_json(f"/v1/sweeps/{sweep_id}/trials", params=params)
            trials.extend(Trial.model_validate(item) for item in body["items"])
            cursor = body.get("next_cursor")
            if not cursor:
                return trials

    def cancel(self, sweep_id: str) -> Sweep:
        """Cancel every child that has not ended (a running one stops within one training step)."""
        return Sweep.model_validate(self._client.request("POST", f"/v1/sweeps/{sweep_id}/cancel").json())

    def children(self, sweep_id: str) -> builtins.list[Job]:
        """The sweep's child jobs (ordinary jobs with `sweep_id`)."""
        jobs: builtins.list[Job] = []
        cursor: str | None = None
        while True:
            params = {"sweep_id": sweep_id, "limit": 200, **({"cursor": cursor} if cursor else {})}
            body = self._client.get_json("/v1/jobs", params=params)
            jobs.extend(Job.model_validate(item) for item in body["items"])
            cursor = body.get("next_cursor")
            if not cursor:
                return jobs

    def wait(
        self,
        sweep_id: str,
        *,
        timeout: float | None = None,
        on_update: SweepUpdate | None = None,
        progress: bool = False,
        poll_interval: float = 2.0,
    ) -> Sweep:
        """Block until every child has ended; returns the final Sweep (whatever its status).

        `progress=True` draws a bar for the sweep and a line per started child on
        stderr; `on_update(sweep, children)` sees every poll. Raises TimeoutError after
        `timeout` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = SweepBar(sweep_id) if progress else None
        with bar or nullcontext():
            while True:
                sweep = self.get(sweep_id)
                children = self.children(sweep_id)
                order = {job_id: i for i, job_id in enumerate(sweep.job_ids)}
                children.sort(key=lambda job: order.get(job.id, len(order)))
                for callback in (on_update, bar):
                    if callback is not None:
                        callback(sweep, children)
                if sweep.finished:
                    return sweep
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"sweep {sweep_id} did not finish within {timeout} s")
                pause = poll_interval if deadline is None else min(poll_interval, deadline - time.monotonic())
                time.sleep(max(pause, 0.0))
