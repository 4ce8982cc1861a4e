"""The one settings class: every environment variable aplserve reads is a field here."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.files import DataFiles

if TYPE_CHECKING:
    from core.objects import Storage


class Settings(BaseSettings):
    """Configuration from `APLSERVE_*` environment variables.

    Defaults give the embedded mode: SQLite and a server-less Celery broker under
    the data dir, so `aplserve serve` needs no other service.
    """

    model_config = SettingsConfigDict(env_prefix="APLSERVE_", extra="ignore")

    data_dir: Path = Field(default=Path("./var"), description="Uploads, artifacts and the embedded database.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default sqlite:///<data_dir>/aplserve.db."
    )
    broker_url: str | None = Field(
        default=None,
        description="Celery broker URL; default a SQLite-backed kombu transport in the data dir.",
    )
    queue_name: str = Field(default="aplserve", description="Celery queue the API sends jobs to.")
    max_upload_bytes: int = Field(
        default=512 * 1024 * 1024,
        gt=0,
        description="Largest dataset upload; past it the upload is refused (413).",
    )
    auth_enabled: bool = Field(
        default=True, description="Require a Bearer API key on /v1 routes; off only for local experiments."
    )
    auth_cache_seconds: float = Field(
        default=10.0,
        ge=0,
        description="How long an accepted API key is reused without a database read; "
        "a revoked key stops working within this time (0: check every request).",
    )
    cors_origins: list[str] = Field(
        default_factory=list, description='Origins allowed by CORS, as JSON: ["https://app.example"].'
    )
    job_lease_seconds: int = Field(
        default=120, gt=0, description="A running job without a heartbeat for this long is considered lost."
    )
    job_max_attempts: int = Field(
        default=3, ge=1, description="Times a job is started before a lost worker fails it (worker_lost)."
    )
    sweep_trials_in_flight: int = Field(
        default=2,
        ge=1,
        le=64,
        description="Search trials of one sweep candidate queued or running at once (the rest wait for "
        "their results, so the sampler learns from them).",
    )
    broker_visibility_timeout_seconds: int = Field(
        default=24 * 3600,
        gt=0,
        description="Redis redelivers an unacknowledged task after this long; longer than the longest job.",
    )
    readiness_timeout_seconds: float = Field(
        default=2.0, gt=0, description="How long /readyz waits for the database and the broker."
    )
    events_poll_seconds: float = Field(
        default=0.5, gt=0, description="How often the job event stream looks for changes."
    )
    default_owner: str = Field(
        default="default", min_length=1, description="Owner of everything when auth is disabled."
    )
    log_level: str = Field(default="info", description="Log level of the server and the embedded worker.")
    webhook_allow_private_addresses: bool = Field(
        default=False,
        description="Let webhooks go to loopback, private and link-local addresses "
        "(receivers on the deployment's own network); off, only public addresses are called.",
    )
    allow_model_download: bool = Field(
        default=False, description="Let `hf:<hub id>` base models be fetched from the hub (needs network)."
    )
    # --- reliability: sending, load, storage, the HTTP edge (docs/reliability.md) ---
    broker_send_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        description="Longest wait for the broker to take a job's message; past it POST /v1/jobs answers "
        "503 broker_unavailable and the job, already committed, is sent by the reconciler. The embedded "
        "SQLite broker waits at least 30 s, as long as SQLite waits for its lock.",
    )
    broker_send_threads: int = Field(
        default=32,
        ge=1,
        description="Threads of the API process that wait for the broker to take new jobs' messages (each "
        "at most the send timeout), apart from api_threads so that a hung broker never holds up other "
        "requests; more sends wait.",
    )
    job_resend_after_seconds: float = Field(
        default=60.0,
        gt=0,
        description="When the broker holds fewer messages than there are queued jobs (it lost them: a "
        "restart without persistence, FLUSHALL, a failover), queued jobs last sent this long ago are "
        "sent again by the reconciler in every worker's sweep.",
    )
    api_threads: int = Field(
        default=8,
        ge=1,
        description="Threads of the API process for its routes' blocking work (database calls); requests "
        "beyond it wait, in order, without holding a database connection. More threads than a few per "
        "core only fight over Python's GIL: 40 answered fewer requests, and later, than 8 "
        "(docs/reliability.md).",
    )
    api_hang_seconds: float = Field(
        default=30.0,
        gt=0,
        description="With `serve --workers N`: an API process whose event loop has not run for this long "
        "(a deadlock, a stopped process) is killed and started again.",
    )
    ingest_threads: int = Field(
        default=2,
        ge=1,
        description="Threads of the API process that validate and store uploaded datasets (seconds to "
        "minutes each), apart from api_threads so that uploads never hold up status polls; "
        "more uploads wait.",
    )
    db_pool_size: int = Field(default=20, ge=1, description="Database connections kept open per process.")
    db_max_overflow: int = Field(
        default=30,
        ge=0,
        description="Extra connections opened under load; with db_pool_size at least api_threads + 10, "
        "so no API thread ever waits for a connection.",
    )
    db_pool_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Longest wait for a pooled database connection before a 503."
    )
    db_ping_idle_seconds: float = Field(
        default=2.0,
        ge=0,
        description="A pooled PostgreSQL connection idle for longer than this is pinged before use, so a "
        "restarted database costs no request; a busy one is not (0: ping every checkout).",
    )
    stale_file_seconds: float = Field(
        default=3600.0,
        ge=0,
        description="Partial files (unfinished uploads, dataset staging, temporary artifacts and "
        "checkpoints) older than this are removed when the server or a worker starts.",
    )
    storage_url: str | None = Field(
        default=None,
        description="Where datasets, checkpoints and models are kept: file://DIR (default: the data dir) "
        "or s3://BUCKET/PREFIX (any S3-compatible server; credentials from the standard AWS_* "
        "variables). With s3 the data dir holds only the embedded database and node-local caches.",
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="The S3 server's URL (SeaweedFS, MinIO, Ceph...); unset: AWS S3."
    )
    storage_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="Connect and read timeout of one object-storage request; with the retries it bounds "
        "how long an upload or a predict waits for an unreachable storage before 503 storage_unavailable.",
    )
    storage_max_attempts: int = Field(
        default=2, ge=1, description="Tries of one object-storage request (the client's own retries)."
    )
    checkpoint_upload_tries: int = Field(
        default=4,
        ge=1,
        description="Tries to store a job's epoch checkpoint (backoff 0.5 s, 1 s, 2 s...) before the job "
        "fails with storage_unavailable.",
    )
    cache_max_bytes: int = Field(
        default=20 * 1024**3,
        ge=0,
        description="Node-local cache of datasets (workers) and model archives (API) materialised from "
        "object storage; least recently used entries go past this size (s3 storage only).",
    )
    max_header_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        description="Largest request head (request line and all headers); a longer one is answered "
        "431 and the connection closed.",
    )
    header_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Longest time a client may take to send a request's headers."
    )
    max_json_body_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="Largest request body outside dataset uploads and predict (job specs and other "
        "JSON); a larger one is answered 413 before it is read.",
    )
    body_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="Longest pause while a request body arrives (and, for bodies under "
        "max_json_body_bytes, the longest time for the whole body); past it the answer is 408.",
    )
    # --- quotas and rate limits per owner (api/quotas.py) ---
    quota_active_jobs: int = Field(
        default=32,
        ge=0,
        description="Most queued + running jobs per owner (429 quota_exceeded; 0: no limit); room for "
        "two default sweeps (12 jobs each) and a few more.",
    )
    quota_dataset_bytes: int = Field(
        default=10 * 1024**3,
        ge=0,
        description="Most bytes of datasets (as uploaded) per owner (429 quota_exceeded; 0: no limit).",
    )
    rate_limit_writes: str = Field(
        default="120/minute",
        description="Requests per owner that change something (POST, PUT, PATCH, DELETE other than "
        "predict), in the `limits` notation; empty: no limit. Over it: 429 with Retry-After.",
    )
    rate_limit_predict: str = Field(
        default="100/second",
        description="Predict requests per owner, in the `limits` notation; empty: no limit.",
    )
    rate_limit_storage_url: str | None = Field(
        default=None,
        description="Where rate-limit counters live (a `limits` storage URL); default the broker's Redis "
        "in full mode (shared by every API process), process memory in embedded mode.",
    )
    # --- model serving (api/serving) ---
    predict_max_inputs: int = Field(default=64, ge=1, description="Most inputs one predict request may hold.")
    predict_max_text_chars: int = Field(default=10_000, ge=1, description="Longest text input (characters).")
    predict_max_image_bytes: int = Field(
        default=10 * 1024 * 1024, ge=1, description="Largest image input (encoded file bytes)."
    )
    predict_max_image_pixels: int = Field(
        default=4096 * 4096, ge=1, description="Most pixels (width x height) of an image input."
    )
    predict_max_body_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1, description="Largest predict request body (JSON or multipart)."
    )
    serving_max_models: int = Field(default=4, ge=1, description="Models kept loaded at once (LRU).")
    serving_max_memory_bytes: int = Field(
        default=4 * 1024**3, ge=1, description="Parameter bytes of all loaded models together (LRU)."
    )
    serving_batching: bool = Field(
        default=True, description="Merge concurrent requests for one model into micro-batches."
    )
    serving_max_batch_size: int = Field(default=32, ge=1, description="Most inputs in one micro-batch.")
    serving_max_wait_ms: float = Field(
        default=5.0, ge=0, description="How long a micro-batch waits for more requests to join it."
    )
    serving_device: str = Field(default="auto", description="'auto' (CUDA when present), 'cpu' or 'cuda'.")
    serving_instances: int | None = Field(
        default=None,
        ge=1,
        description="Forward passes one model runs at once (threads sharing its weights); "
        "default 1 on CUDA, 2 on a CPU with 2 or more cores.",
    )
    serving_torch_threads: int | None = Field(
        default=None,
        ge=1,
        description="torch intra-op threads for inference; default on CPU the cores divided among the "
        "instances, on CUDA torch's own choice.",
    )

    worker_torch_threads: int | None = Field(
        default=None,
        ge=1,
        description="torch intra-op threads for training in each worker process; default the cores "
        "divided among the processes one `aplserve worker --concurrency N` starts (all of them for one). "
        "An OMP_NUM_THREADS in the environment is left to torch. Set it when other worker commands "
        "or services share the machine's cores.",
    )

    worker_devices: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="Devices this worker offers one job (`hyperparameters.devices`): one training process "
        "each, data-parallel through torch.distributed. Default: the visible CUDA devices, or 1 on a "
        "machine without; on CPU, N > 1 runs N gloo processes (for testing the multi-device path, or a "
        "many-core host). Give each worker its own devices (CUDA_VISIBLE_DEVICES, compose reservations).",
    )

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'aplserve.db'}"

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{self.data_dir / 'broker.db'}"

    @property
    def files(self) -> DataFiles:
        """Where every file lives under `data_dir` (core.files)."""
        return DataFiles(self.data_dir)

    @property
    def storage(self) -> Storage:
        """The storage interface (core.objects): file:// or s3://, one instance per configuration."""
        from core.objects import storage_for

        return storage_for(self)


@lru_cache
def get_settings() -> Settings:
    return Settings()
