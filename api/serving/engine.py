"""The serving engine: lazily loaded models in an LRU cache, each with its batching threads.

A model is loaded on its first request (in a loader thread, once, however many
requests wait for it) and kept while it is among the `max_models` most recently used
and the parameter bytes of all cached models stay within `max_memory_bytes`.

Eviction never fails a request in flight: every request holds a reference to the
entry it uses from before it is queued until its answer is back. Evicting (or
replacing, when a model's artifact digest changed) only takes the entry out of the
cache, so that new requests load a fresh one; the old entry's thread is stopped
when its last user lets go. Memory of such a retiring entry is therefore freed a
little after the eviction, never before its requests are answered.

torch is imported only when the first model loads, never when `api` is imported.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from api.serving.batcher import BatchPolicy, BatchStats, ModelBatcher
from apl.threads import available_cores, share_of_cores

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelRef:
    """What the engine needs to know about a model row (no database access in here)."""

    id: str
    path: Path
    sha256: str
    modality: str


@dataclass(frozen=True)
class EngineConfig:
    max_models: int = 4
    max_memory_bytes: int = 4 * 1024**3
    batching: bool = True
    max_batch_size: int = 32
    max_wait_s: float = 0.005
    device: str = "auto"
    #: Forward passes one model runs at once; None: 1 on CUDA, 2 on a CPU with 2+ cores.
    instances: int | None = None
    #: torch intra-op threads; None: on CPU the cores shared out among the instances.
    torch_threads: int | None = None


def resolve_parallelism(config: EngineConfig, cuda: bool, cores: int) -> tuple[int, int | None]:
    """(instances per model, torch threads or None to leave torch's default) for this machine."""
    on_gpu = cuda and config.device != "cpu"
    instances = config.instances or (1 if on_gpu else min(2, max(1, cores)))
    threads = config.torch_threads
    if threads is None and not on_gpu:
        threads = share_of_cores(instances, cores)
    return instances, threads


@dataclass(eq=False)
class LoadedModel:
    ref: ModelRef
    predictor: Any
    batcher: ModelBatcher
    nbytes: int
    users: int = 0
    retired: bool = False


class Arrival:
    """A request counted as on its way to a model; `leave` (idempotent) when queued or given up."""

    def __init__(self, engine: ServingEngine, model_id: str) -> None:
        self._engine = engine
        self._model_id = model_id
        self._left = False

    def leave(self) -> None:
        if not self._left:
            self._left = True
            self._engine._leave(self._model_id)


@dataclass
class _PendingLoad:
    future: Future[LoadedModel]
    waiters: int = 0


@dataclass
class EngineCounters:
    loads: int = 0
    evictions: int = 0
    #: Evictions of a model that still had requests queued or running (they were answered).
    evictions_in_use: int = 0
    load_failures: int = 0


def parameter_bytes(module: Any) -> int:
    """Memory held by a module's parameters and buffers: the estimate the LRU budgets with."""
    total = 0
    for tensor in [*module.parameters(), *module.buffers()]:
        total += int(tensor.numel()) * int(tensor.element_size())
    return total


def load_predictor(ref: ModelRef, device: str) -> Any:
    """`apl.inference.load` (imports torch; runs in the loader thread)."""
    from apl.inference import load

    return load(ref.path, device=device)


class ServingEngine:
    def __init__(
        self,
        config: EngineConfig,
        *,
        stats: BatchStats | None = None,
        on_change: Callable[[ServingEngine], None] | None = None,
        loader: Callable[[ModelRef, str], Any] = load_predictor,
    ) -> None:
        self.config = config
        self.stats = stats or BatchStats()
        self.counters = EngineCounters()
        self._on_change = on_change
        self._loader_fn = loader
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, LoadedModel] = OrderedDict()
        self._loading: dict[str, _PendingLoad] = {}
        self._arriving: dict[str, int] = {}
        self._retiring: set[LoadedModel] = set()
        self._loader = ThreadPoolExecutor(max_workers=2, thread_name_prefix="aplserve-model-loader")
        self._closed = False
        self._torch_configured = False
        self.instances = 1

    # ---- public -----------------------------------------------------------------------

    def arrive(self, model_id: str) -> Arrival:
        """Count a request for `model_id` as on its way, so that a forming batch waits for it."""
        with self._lock:
            self._arriving[model_id] = self._arriving.get(model_id, 0) + 1
        return Arrival(self, model_id)

    def _leave(self, model_id: str) -> None:
        with self._lock:
            left = self._arriving.get(model_id, 0) - 1
            if left > 0:
                self._arriving[model_id] = left
            else:
                self._arriving.pop(model_id, None)

    def arriving(self, model_id: str) -> int:
        return self._arriving.get(model_id, 0)

    async def predict(self, ref: ModelRef, items: Sequence[Any], arrival: Arrival | None = None) -> Any:
        """Probabilities (len(items) x labels) for `items` from the model `ref`."""
        entry = await self._acquire(ref)
        try:
            if arrival is not None:
                arrival.leave()  # before queueing: the batch that takes this request must not wait for it
            return await asyncio.wrap_future(entry.batcher.submit(items))
        finally:
            self._release(entry)

    def evict(self, model_id: str) -> bool:
        """Drop a model from the cache now (it was deleted); its queued requests are still answered."""
        with self._lock:
            entry = self._cache.pop(model_id, None)
            if entry is not None:
                self._retire_locked(entry)
        if entry is not None:
            self._changed()
        return entry is not None

    def loaded(self) -> dict[str, int]:
        """Cached model ids (least recently used first) and their estimated bytes."""
        with self._lock:
            return {model_id: entry.nbytes for model_id, entry in self._cache.items()}

    def memory_bytes(self) -> int:
        with self._lock:
            return sum(entry.nbytes for entry in self._cache.values())

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            counters = {
                "loads": self.counters.loads,
                "evictions": self.counters.evictions,
                "evictions_in_use": self.counters.evictions_in_use,
                "load_failures": self.counters.load_failures,
                "loaded": list(self._cache),
                "retiring": len(self._retiring),
            }
        return counters | self.stats.snapshot()

    def close(self) -> None:
        """Stop every model thread (after queued requests) and the loader."""
        with self._lock:
            self._closed = True
            entries = list(self._cache.values())
            self._cache.clear()
            for entry in entries:
                self._retire_locked(entry)
            retiring = list(self._retiring)
        self._loader.shutdown(wait=False, cancel_futures=True)
        for entry in retiring:
            entry.batcher.close(timeout=5.0)
        self._changed()

    # ---- cache ------------------------------------------------------------------------

    async def _acquire(self, ref: ModelRef) -> LoadedModel:
        with self._lock:
            if self._closed:
                raise RuntimeError("the serving engine is closed")
            entry = self._cache.get(ref.id)
            if entry is not None and entry.ref.sha256 == ref.sha256:
                entry.users += 1
                self._cache.move_to_end(ref.id)
                return entry
            if entry is not None:  # the artifact changed: serve the new one from now on
                del self._cache[ref.id]
                self._retire_locked(entry)
            pending = self._loading.get(ref.id)
            if pending is None or pending.future.done():
                pending = _PendingLoad(self._loader.submit(self._load, ref))
                self._loading[ref.id] = pending
            pending.waiters += 1
        # The loader counts this waiter as a user of the entry before anything can evict it,
        # so a waiter that gives up (client gone) must still let go once the load is done.
        future = pending.future
        try:
            return await asyncio.shield(asyncio.wrap_future(future))
        except asyncio.CancelledError:
            future.add_done_callback(self._release_abandoned)
            raise

    def _release_abandoned(self, future: Future[LoadedModel]) -> None:
        if not future.cancelled() and future.exception() is None:
            self._release(future.result())

    def _release(self, entry: LoadedModel) -> None:
        with self._lock:
            entry.users -= 1
            stop = entry.retired and entry.users == 0
            if stop:
                self._retiring.discard(entry)
        if stop:
            entry.batcher.close()

    def _retire_locked(self, entry: LoadedModel) -> None:
        entry.retired = True
        self.counters.evictions += 1
        if entry.users == 0:
            entry.batcher.close()
        else:
            self.counters.evictions_in_use += 1
            self._retiring.add(entry)

    def _configure_torch(self) -> None:
        if self._torch_configured:
            return
        self._torch_configured = True
        import torch

        cuda = torch.cuda.is_available()
        self.instances, threads = resolve_parallelism(self.config, cuda, available_cores())
        if threads is not None:
            torch.set_num_threads(threads)
        log.info("serving: %d forward pass(es) per model at once, torch threads %s", self.instances, threads)

    def _load(self, ref: ModelRef) -> LoadedModel:
        try:
            self._configure_torch()
            predictor = self._loader_fn(ref, self.config.device)
        except BaseException:
            with self._lock:
                self.counters.load_failures += 1
                self._loading.pop(ref.id, None)
            log.warning("model %s could not be loaded", ref.id, exc_info=True)
            raise
        nbytes = parameter_bytes(predictor.module)
        policy = BatchPolicy(
            self.config.batching, self.config.max_batch_size, self.config.max_wait_s, self.instances
        )
        batcher = ModelBatcher(
            ref.id[:8], predictor.predict_proba, policy, self.stats, lambda: self.arriving(ref.id)
        )
        entry = LoadedModel(ref=ref, predictor=predictor, batcher=batcher, nbytes=nbytes)
        with self._lock:
            pending = self._loading.pop(ref.id, None)
            entry.users = pending.waiters if pending is not None else 0
            self.counters.loads += 1
            if self._closed:
                self._retire_locked(entry)
            else:
                old = self._cache.pop(ref.id, None)
                if old is not None:
                    self._retire_locked(old)
                self._cache[ref.id] = entry
                self._evict_locked(keep=ref.id)
        log.info("model %s loaded (%.1f MB of parameters)", ref.id, nbytes / 1e6)
        self._changed()
        return entry

    def _evict_locked(self, keep: str) -> None:
        """Drop least recently used models until both bounds hold (the newest always stays)."""

        def over() -> bool:
            memory = sum(entry.nbytes for entry in self._cache.values())
            return len(self._cache) > self.config.max_models or memory > self.config.max_memory_bytes

        while over() and len(self._cache) > 1:
            victim_id = next(model_id for model_id in self._cache if model_id != keep)
            victim = self._cache.pop(victim_id)
            log.info("model %s evicted from the serving cache", victim_id)
            self._retire_locked(victim)

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self)
