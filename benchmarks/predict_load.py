"""Load test of POST /v1/models/{id}/predict: micro-batching on against one request at a time.

Usage: .venv/bin/python benchmarks/predict_load.py [--base-model minilm-l6] [--clients 1,8,32]
       [--duration 8] [--max-requests 4000] [--rounds 2] [--train-samples 128]

What it does, all on this machine and loopback only:
1. trains a small model with `apl.training.train` (default: the MiniLM-L6 text encoder, one
   epoch on a slice of the offline movie-genre demo data), publishes it with
   `apl.artifacts.publish_result` into a temporary data dir and registers it (Job + Model
   rows in a fresh SQLite database) with an API key;
2. measures the model alone (no HTTP): ms per input one at a time and in full batches;
3. starts four API servers (uvicorn, one process each) on free 127.0.0.1 ports:
   - `on`: batching with the serving defaults (on CPU: 2 instances, a forward pass each),
   - `on-1`: batching with one instance using all cores (the gain of batching alone),
   - `off-1`, `off-N`: one request at a time (batching off, one instance) with 1 and with
     all torch threads; the better of the two is the baseline, `off`;
   warms the model up, then for each client count runs that many concurrent clients (one
   text per request, each client sends its next request when the previous answer is back)
   for `--duration` seconds or `--max-requests` requests, whichever comes first, against
   each server in turn, `--rounds` times over (the median round is reported: this host's
   speed varies from minute to minute);
4. prints requests/s, p50 and p99 latency per (server, clients), and the throughput of
   `on` and `on-1` over `off` at each client count.

The client runs in this process and shares the CPU with the server, as a real load
generator on the same host would; numbers are for comparison, not absolute capacity.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import socket
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from apl.threads import available_cores  # noqa: E402  (needs ROOT on the path; no torch)
from benchmarks.server import running  # noqa: E402


@dataclass(frozen=True)
class Mode:
    name: str
    batching: bool
    instances: int | None  # None: the serving default
    torch_threads: int | None = None  # None: the serving default


CORES = available_cores()
MODES = (
    Mode("on", True, None),
    Mode("on-1", True, 1, CORES),
    Mode("off-1", False, 1, 1),
    Mode("off-N", False, 1, CORES),
)


@dataclass(frozen=True)
class Result:
    mode: str
    clients: int
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float
    mean_batch: float = 1.0

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def _write_dataset(directory: Path, count: int) -> list[str]:
    """A slice of the offline movie-genre demo data in the stored form; returns its texts."""
    from aplserve.demo_data import movie_samples

    samples = movie_samples()[:count]
    directory.mkdir(parents=True)
    with (directory / "samples.jsonl").open("w", encoding="utf-8") as out:
        for text, labels in samples:
            out.write(json.dumps({"text": text, "labels": labels}) + "\n")
    labels = sorted({label for _, names in samples for label in names})
    (directory / "labels.json").write_text(json.dumps(labels))
    return [text for text, _ in samples]


def prepare(data_dir: Path, base_model: str, train_samples: int) -> tuple[str, str, list[str]]:
    """Train, publish and register a model; returns (api key, model id, texts to send)."""

    from api.auth import create_api_key
    from apl.spec import Hyperparameters
    from apl.training import TrainConfig, train
    from core.db.migrate import upgrade_to_head
    from core.db.session import dispose_engines, session_scope
    from core.registry import insert_finished_job, publish_model
    from core.settings import Settings

    settings = Settings(data_dir=data_dir)
    upgrade_to_head(settings)
    texts = _write_dataset(data_dir / "bench-dataset", train_samples)
    started = time.perf_counter()
    hyper = Hyperparameters(epochs=1, batch_size=16, max_length=32, seed=0)
    result = train(
        TrainConfig(data_dir / "bench-dataset", base_model, hyperparameters=hyper, device="cpu"), []
    )
    storage = settings.storage  # the one storage interface (core.objects), as the worker writes
    record = publish_model(result, storage.scratch, base_model=base_model)
    storage.publish(storage.scratch.artifact(record.id))
    print(
        f"trained {base_model} on {train_samples} samples in {time.perf_counter() - started:.1f}s", flush=True
    )
    with session_scope(settings) as session:
        owner, key = create_api_key(session, "bench")
        insert_finished_job(session, record, owner_id=owner.id, spec={"base_model": base_model})
    model_id = record.id
    dispose_engines()
    return key, model_id, texts


@dataclass(frozen=True)
class Ceiling:
    """The model alone, without HTTP: what batching can gain at most on this machine."""

    single_ms: float
    batched_ms: float
    batch: int

    @property
    def ratio(self) -> float:
        return self.single_ms / self.batched_ms


def model_ceiling(data_dir: Path, texts: list[str], batch: int, seconds: float = 4.0) -> Ceiling:
    """ms per input for one input per forward pass and for `batch` inputs per pass.

    Each is measured with 1 and with all torch threads and the faster kept (one small
    input is often quicker on one thread), in a thread other than the main one, as the
    server's model threads run.
    """
    import threading

    import torch

    from apl.inference import load
    from core.files import DataFiles

    artifact = next(DataFiles(data_dir).artifacts.glob("*.tar"))
    predictor = load(artifact, device="auto")
    results: list[float] = []

    def per_input(size: int) -> float:
        for start in range(0, 3 * size, size):  # warm-up
            predictor.predict_proba(texts[start : start + size], size)
        done, began = 0, time.perf_counter()
        while time.perf_counter() - began < seconds / 2:
            start = (done * 7) % (len(texts) - size)
            predictor.predict_proba(texts[start : start + size], size)
            done += size
        return (time.perf_counter() - began) / done * 1000

    def measure() -> None:
        for threads in sorted({1, CORES}):
            torch.set_num_threads(threads)
            results.extend([per_input(1), per_input(batch)])

    thread = threading.Thread(target=measure)
    thread.start()
    thread.join()
    return Ceiling(min(results[0::2]), min(results[1::2]), batch)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def server(data_dir: Path, mode: Mode) -> Iterator[str]:
    """uvicorn on a free loopback port in its own process group; always stopped on exit."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("APLSERVE_SERVING_")} | {
        "APLSERVE_DATA_DIR": str(data_dir),
        "APLSERVE_SERVING_BATCHING": "true" if mode.batching else "false",
        "APLSERVE_LOG_LEVEL": "warning",
        "APLSERVE_RATE_LIMIT_PREDICT": "",  # measure the server, not the per-owner rate limit
    }
    if mode.instances is not None:
        env["APLSERVE_SERVING_INSTANCES"] = str(mode.instances)
    if mode.torch_threads is not None:
        env["APLSERVE_SERVING_TORCH_THREADS"] = str(mode.torch_threads)
    command = [
        sys.executable, "-m", "uvicorn", "api.main:create_app", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    with running(command, env, port, start_timeout=60.0, stop_timeout=20.0) as server:
        yield server.base


class HttpConnection:
    """A minimal HTTP/1.1 keep-alive client for one connection.

    A load generator must cost the shared CPU as little as possible (like wrk, unlike a
    full-featured client), or it measures itself: this one writes a prepared request
    and reads one Content-Length response, nothing more.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post_json(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{head}\r\n".encode()
            + body
        )
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()


async def _load(
    base: str, key: str, model_id: str, texts: list[str], clients: int, duration: float, max_requests: int
) -> Result:
    host, port = base.removeprefix("http://").split(":")
    path = f"/v1/models/{model_id}/predict"
    headers = {"Authorization": f"Bearer {key}"}
    bodies = [json.dumps({"inputs": [text]}).encode() for text in texts]
    latencies: list[float] = []
    errors = 0
    sent = 0
    stop_at = time.perf_counter() + duration

    async def client(index: int) -> None:
        nonlocal errors, sent
        connection = HttpConnection(host, int(port))
        try:
            while time.perf_counter() < stop_at and sent < max_requests:
                body = bodies[(index * 7919 + sent) % len(bodies)]
                sent += 1
                started = time.perf_counter()
                status, _ = await connection.post_json(path, body, headers)
                if status == 200:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors += 1
        finally:
            await connection.close()

    began = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    seconds = time.perf_counter() - began
    ordered = sorted(latencies) or [0.0]
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return Result(
        mode="",
        clients=clients,
        requests=len(latencies),
        errors=errors,
        seconds=seconds,
        p50_ms=statistics.median(ordered) * 1000,
        p99_ms=p99 * 1000,
    )


def _batch_counters(base: str) -> tuple[float, float]:
    """(forward passes, inputs) so far, from the server's Prometheus histogram."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
        text = response.read().decode()
    values = dict(
        line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("aplserve_predict_batch_size")
    )
    return float(values.get("aplserve_predict_batch_size_count", 0)), float(
        values.get("aplserve_predict_batch_size_sum", 0)
    )


def _measure(
    base: str, key: str, model_id: str, texts: list[str], clients: int, args: argparse.Namespace
) -> Result:
    passes, inputs = _batch_counters(base)
    result = asyncio.run(_load(base, key, model_id, texts, clients, args.duration, args.max_requests))
    passes_after, inputs_after = _batch_counters(base)
    mean = (inputs_after - inputs) / max(1.0, passes_after - passes)
    return dataclasses.replace(result, mean_batch=mean)


def run(args: argparse.Namespace, data_dir: Path) -> tuple[list[Result], Ceiling]:
    """The servers run side by side and the runs take turns per client count, so that load
    from other processes on a shared machine hits every mode alike."""
    key, model_id, texts = prepare(data_dir, args.base_model, args.train_samples)
    ceiling = model_ceiling(data_dir, texts, max(int(value) for value in args.clients.split(",")))
    print(
        f"model alone: {ceiling.single_ms:.2f} ms per input one at a time, {ceiling.batched_ms:.2f} ms per "
        f"input in batches of {ceiling.batch}: batching alone can gain at most ~{ceiling.ratio:.1f}x here",
        flush=True,
    )
    clients = [int(value) for value in args.clients.split(",")]
    results = []
    with contextlib.ExitStack() as stack:
        bases = {mode.name: stack.enter_context(server(data_dir, mode)) for mode in MODES}
        for base in bases.values():
            warm = asyncio.run(_load(base, key, model_id, texts, 4, 2.0, 40))  # load the model
            if warm.errors or not warm.requests:
                raise RuntimeError("the warm-up requests failed")
        rounds: dict[tuple[str, int], list[Result]] = {}
        for round_number in range(1, args.rounds + 1):
            for count in clients:
                for mode in MODES:
                    result = dataclasses.replace(
                        _measure(bases[mode.name], key, model_id, texts, count, args), mode=mode.name
                    )
                    rounds.setdefault((mode.name, count), []).append(result)
                    print(
                        f"round {round_number} {mode.name:<5} clients {count:>3}: {result.rps:8.1f} req/s"
                        f"  p50 {result.p50_ms:7.1f} ms  p99 {result.p99_ms:7.1f} ms  mean batch "
                        f"{result.mean_batch:5.1f}  ({result.requests} ok, {result.errors} errors)",
                        flush=True,
                    )
    for count in clients:
        for mode in MODES:
            runs = sorted(rounds[(mode.name, count)], key=lambda r: r.rps)
            results.append(runs[(len(runs) - 1) // 2])  # the median (the lower one of an even count)
    return results, ceiling


def table(results: list[Result], ceiling: Ceiling) -> str:
    lines = [
        "| server | clients | requests/s | p50 ms | p99 ms | mean batch | requests | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.mode} | {r.clients} | {r.rps:.1f} | {r.p50_ms:.1f} "
            f"| {r.p99_ms:.1f} | {r.mean_batch:.1f} | {r.requests} | {r.errors} |"
        )
    by_key = {(r.mode, r.clients): r for r in results}
    lines.append("")
    for clients in sorted({r.clients for r in results}):
        baselines = [by_key[(name, clients)] for name in ("off-1", "off-N") if (name, clients) in by_key]
        off = max(baselines, key=lambda r: r.rps, default=None)
        if off is None or not off.rps:
            continue
        gains = [
            f"{name} {by_key[(name, clients)].rps / off.rps:.2f}x"
            for name in ("on", "on-1")
            if (name, clients) in by_key
        ]
        lines.append(
            f"clients {clients}: throughput over one request at a time ({off.mode}): {', '.join(gains)}"
        )
    lines.append(
        f"model alone: {ceiling.single_ms:.2f} ms per input one at a time, "
        f"{ceiling.batched_ms:.2f} ms per input in batches of {ceiling.batch} ({ceiling.ratio:.2f}x)"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base-model", default="minilm-l6")
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per (server, clients) run")
    parser.add_argument("--max-requests", type=int, default=4000, help="requests per run at most")
    parser.add_argument("--rounds", type=int, default=2, help="times each run is repeated (median kept)")
    parser.add_argument("--train-samples", type=int, default=128)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aplserve-predict-bench-") as tmp:
        results, ceiling = run(args, Path(tmp))
    print()
    print(table(results, ceiling))


if __name__ == "__main__":
    main()
