"""The core layer is tested on both deployments, with the worker tests' per-backend settings."""

from tests.worker.conftest import settings, sqlite_schema, worker_postgres_url

__all__ = ["settings", "sqlite_schema", "worker_postgres_url"]
