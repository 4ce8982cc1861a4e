"""What /readyz asks of each dependency: one blocking check per dependency, raising when it is down.

The route runs each on threads of its own with a deadline (api/routes/health.py).
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import text

from core.broker import check_broker
from core.db.session import get_engine
from core.settings import Settings


def check_database(settings: Settings) -> None:
    with get_engine(settings).connect() as connection:
        connection.execute(text("SELECT 1"))


def check_broker_connection(settings: Settings) -> None:
    check_broker(settings, timeout=settings.readiness_timeout_seconds)


def check_storage(settings: Settings) -> None:
    settings.storage.check()  # file://: nothing to ask; s3://: HEAD of the bucket


#: The dependencies /readyz names, in the order it names them.
CHECKS: dict[str, Callable[[Settings], None]] = {
    "database": check_database,
    "broker": check_broker_connection,
    "storage": check_storage,
}
