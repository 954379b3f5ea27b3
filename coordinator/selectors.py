"""Reads on users and platform health."""

from __future__ import annotations

import logging
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

from django.apps import AppConfig, apps
from django.conf import settings
from django.db import DatabaseError, connections
from django.db.models import Avg, BigIntegerField, Count, ExpressionWrapper, F
from django.utils import timezone

from coordinator.models import IdempotentAnswer

logger = logging.getLogger(__name__)

# Below this much free space a directory the platform writes to counts as full.
LOW_DISK_BYTES = 50 * 1024 * 1024


def database_is_up(alias: str = "default") -> bool:
    """True when the database answers a trivial query."""
    try:
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError:
        return False
    return True


def redis_is_up() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2).ping())
    except redis.RedisError:
        return False


def disk_state(path: Path) -> str:
    """`ok`, `full` (less than LOW_DISK_BYTES free) or `absent` (no such directory yet)."""
    try:
        free = shutil.disk_usage(path).free
    except FileNotFoundError:
        return "absent"
    return "ok" if free >= LOW_DISK_BYTES else "full"


def process_restarts() -> dict[str, dict[str, Any]]:
    """Under `serve`: each process that died since it started, how often and when last (the
    supervisor's watchdog keeps the record, coordinator/serving/watchdog.py). Empty elsewhere."""
    from coordinator.serving.supervision import supervision_state

    state = supervision_state(Path(settings.RUN_DIR)) or {}
    processes = state.get("processes")
    return {str(name): dict(record) for name, record in processes.items()} if isinstance(processes, dict) else {}


def platform_health() -> dict[str, str]:
    """Each component's state: `ok`, `absent` (not configured or not running here), or a failure
    (`down`, `full`, `stale`). The database and Redis are the platform's own; every app adds its
    components through a `health()` method on its AppConfig, as it adds admin dashboard cards."""
    components = {"database": "ok" if database_is_up() else "down"}
    if settings.REDIS_URL:
        components["redis"] = "ok" if redis_is_up() else "down"
    for config in apps.get_app_configs():
        contribute = getattr(config, "health", None)
        if contribute is None:
            continue
        try:
            components.update(contribute())
        except Exception:  # a check that cannot run (its cache is the database, say) says so
            logger.exception("Health check of %s failed", config.label)
            components[config.label] = "down"
    return components


def idempotent_answer_find(*, scope: str, key: str, keep: timedelta) -> IdempotentAnswer | None:
    """The stored answer for this key, unless it is older than `keep`."""
    return IdempotentAnswer.objects.filter(scope=scope, key=key, created_at__gte=timezone.now() - keep).first()


def operations_points(
    *, series: list[str], since: datetime, bucket_seconds: int = 60
) -> dict[str, list[tuple[int, float, int]]]:
    """The values of `series` from `since` on, oldest first, as (bucket start in Unix seconds, mean
    of the bucket's minutes, number of minutes in it); buckets of a minute are the minutes themselves."""
    from coordinator.models import MetricMinute

    points: dict[str, list[tuple[int, float, int]]] = {name: [] for name in series}
    rows = MetricMinute.objects.filter(series__in=series, minute__gte=int(since.timestamp()))
    if bucket_seconds == 60:
        found = rows.order_by("series", "minute").values_list("series", "minute", "value")
        for name, minute, value in found:
            points[name].append((minute, value, 1))
        return points
    # Whole-number division groups alike on SQLite and PostgreSQL.
    bucket = ExpressionWrapper(F("minute") / bucket_seconds * bucket_seconds, output_field=BigIntegerField())
    grouped = (
        rows.annotate(bucket=bucket)
        .values("series", "bucket")
        .annotate(mean=Avg("value"), n=Count("id"))
        .order_by("series", "bucket")
        .values_list("series", "bucket", "mean", "n")
    )
    for name, start, mean, count in grouped:
        points[name].append((int(start), round(float(mean), 3), int(count)))
    return points


def operations_parts() -> list[tuple[AppConfig, ModuleType]]:
    """Each app's part of the operations dashboard: the module its `AppConfig.operations()` returns,
    holding CHARTS, LIVE_CARDS, `minute(start, end)`, `attention(now)` and optionally `broadcast(state)`."""
    parts = []
    for config in apps.get_app_configs():
        hook = getattr(config, "operations", None)
        if hook is not None:
            parts.append((config, hook()))
    return parts
