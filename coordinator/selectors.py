"""Reads on users, the audit trail and platform health."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

from django.apps import AppConfig, apps
from django.conf import settings
from django.db import DatabaseError, connections
from django.db.models import Avg, BigIntegerField, Count, ExpressionWrapper, F
from django.http import HttpRequest
from django.utils import timezone
from django.utils.text import slugify

from coordinator.models import AuditEntry, IdempotentAnswer, User

logger = logging.getLogger(__name__)


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
    """`ok`, `full` (less than HEALTH_LOW_DISK_BYTES free) or `absent` (no such directory yet)."""
    try:
        free = shutil.disk_usage(path).free
    except FileNotFoundError:
        return "absent"
    return "ok" if free >= settings.HEALTH_LOW_DISK_BYTES else "full"


def unix_socket_listening(path: Path) -> bool | None:
    """Whether a process listens on the UNIX socket at `path`, from the kernel's table of UNIX
    sockets (Linux), without connecting to it; None where there is no such table."""
    listening_flag = 0x10000  # __SO_ACCEPTCON: the socket is listening
    try:
        table = Path("/proc/net/unix").read_text().splitlines()[1:]
    except OSError:
        return None
    names = {str(path), str(path.resolve())}
    for line in table:
        fields = line.split()
        if len(fields) >= 8 and fields[7] in names and int(fields[3], 16) & listening_flag:
            return True
    return False


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


AUDIT_EXPORT_COLUMNS = (
    "id",
    "at",
    "actor",
    "address",
    "action",
    "target_type",
    "target_id",
    "target",
    "before",
    "after",
    "details",
)


def audit_export_rows(*, user: User | None, everything: bool) -> Iterator[dict[str, Any]]:
    """The audit trail for an export: every entry for an admin's `everything`, else the user's own actions."""
    qs = AuditEntry.objects.order_by("pk")
    if not everything:
        qs = qs.filter(actor_id=user.pk if user is not None else None)
    fields = ("pk", "at", "actor_label", "address", "action", "target_type", "target_id", "target_label")
    for row in qs.values_list(*fields, "before", "after", "details").iterator(chunk_size=5000):
        yield dict(zip(AUDIT_EXPORT_COLUMNS, (*row[:1], row[1].isoformat(), *row[2:]), strict=True))


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
    holding CHARTS, `minute(start, end)`, `attention(now)` and optionally `broadcast(state)`."""
    parts = []
    for config in apps.get_app_configs():
        hook = getattr(config, "operations", None)
        if hook is not None:
            parts.append((config, hook()))
    return parts


def operations_overview(request: HttpRequest | None, *, now: datetime | None = None) -> list[dict[str, Any]]:
    """The dashboard's panels, one per app, as the admin index renders them and as the live channel
    refreshes them: each app's current counts (the cards its `AppConfig.admin_dashboard(request)`
    returns, each with a `key`), its needs-attention items with a count, and its charts' series.

    `request` None: the overview the live channel hands to every reader of the dashboard (an app
    leaves out nothing for it that the minute values do not carry to the same readers already)."""
    now = now or timezone.now()
    parts = dict((config.label, part) for config, part in operations_parts())
    panels: list[dict[str, Any]] = []
    for config in apps.get_app_configs():
        cards = _cards_of(config, request)
        part = parts.get(config.label)
        if not cards and part is None:
            continue
        for card in cards:
            card["key"] = f"{config.label}.{slugify(str(card['title']))}"
        attention: list[dict[str, Any]] = []
        charts: list[dict[str, Any]] = []
        if part is not None:
            try:
                attention = [item for item in part.attention(now) if item["count"]]
            except Exception:  # a broken query must not take the admin index down with it
                logger.exception("Attention items of %s failed", config.label)
            for number, chart in enumerate(getattr(part, "CHARTS", [])):
                series = [{"name": name, "label": label} for name, label in chart["series"].items()]
                charts.append({"id": f"chart-{config.label}-{number}", "title": chart["title"], "series": series})
        panels.append(
            {
                "key": config.label,
                "title": config.verbose_name,
                "cards": cards,
                "attention": attention,
                "charts": charts,
            }
        )
    return panels


def _cards_of(config: AppConfig, request: HttpRequest | None) -> list[dict[str, Any]]:
    contribute = getattr(config, "admin_dashboard", None)
    if contribute is None:
        return []
    try:
        return [dict(card) for card in contribute(request)]
    except Exception:  # a broken card must not take the admin index down with it
        logger.exception("Dashboard card of %s failed", config.label)
        return []


def operations_overview_state(panels: list[dict[str, Any]]) -> dict[str, Any]:
    """What the live channel carries of an overview: each card's value and note by key, and each
    panel's needs-attention items (the page shows exactly these, as the index rendered them)."""
    return {
        "cards": {
            card["key"]: {"value": str(card["value"]), "note": str(card.get("note") or "")}
            for panel in panels
            for card in panel["cards"]
        },
        "attention": {
            panel["key"]: [
                {"title": str(item["title"]), "count": item["count"], "url": str(item["url"])}
                for item in panel["attention"]
            ]
            for panel in panels
        },
    }
