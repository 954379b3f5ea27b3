"""The silence watchdog: rules over topics by pattern raise alerts, which resolve by themselves.

Everything that reports publishes progress topics (`run:`, `job:`, `pooldevice:`, `stream:`), and
each topic's row keeps the time of its last event (`updated_at`) and of its start (`started_at`),
both indexed together with `ended_at`. A sweep therefore reads, per rule, only the live topics
past the rule's time limit (one bounded query per rule, never a query per topic); it raises an
alert for each, and resolves the open alerts whose topic no longer meets the rule. Alerts appear
as `alert:<id>` progress events (`new` when raised, `end` when resolved), which the webhooks turn
into `alert.raised` / `alert.resolved`.

Apps may offer conditions that narrow a rule (`only_if`) by defining `watch_conditions()` on their
AppConfig, as they offer health checks: `{name: keys -> the keys it holds for}`, keys being the
part of the topic after its prefix (a device id for `pooldevice:<id>`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.apps import apps
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.utils import timezone

from progress.models import Alert, DurationSample, ProgressTopic, WatchMark, WatchRule
from progress.services import progress_publish

logger = logging.getLogger("progress.watchdog")

# Candidates read per rule and sweep; a rule that fills it resolves nothing that sweep (it cannot
# tell a cleared topic from one beyond the limit).
SWEEP_LIMIT = 1000
# How often the clusters' sweep loop evaluates the rules (whichever cluster comes first).
SWEEP_EVERY_SECONDS = 30
# A p95 needs this many past durations of the same name before it is trusted; at most KEEP kept.
P95_MIN_SAMPLES = 20
P95_KEEP = 200
_DUE_KEY = "progress:watchdog:due"

Condition = Callable[[list[str]], set[str]]


def watch_conditions() -> dict[str, Condition]:
    """The conditions the installed apps offer for `only_if`."""
    found: dict[str, Condition] = {}
    for config in apps.get_app_configs():
        contribute = getattr(config, "watch_conditions", None)
        if contribute is not None:
            found.update(contribute())
    return found


# --- Alerts -------------------------------------------------------------------------------------


def alert_raise(
    *, key: str, message: str, topic: str = "", owner_id: int | None = None, rule: WatchRule | None = None
) -> Alert | None:
    """Raise the alert `key` unless it is open already; publishes `new` on `alert:<id>`. Returns
    the new alert, or None when one was open."""
    if Alert.objects.filter(key=key, resolved_at__isnull=True).exists():
        return None
    try:
        with transaction.atomic():
            alert = Alert.objects.create(
                key=key[:300],
                message=message[:500],
                topic=topic[:200],
                owner_id=owner_id,
                rule=rule,
                raised_at=timezone.now(),
            )
            progress_publish(
                topic=alert.progress_topic, kind="new", text=alert.message, state=_state(alert), owner_id=owner_id
            )
    except IntegrityError:  # another sweep raised it first (one open alert per key)
        return None
    return alert


def alert_resolve(*, key: str) -> int:
    """Resolve the open alert `key`, if any; publishes `end` on `alert:<id>`."""
    return _resolve(list(Alert.objects.filter(key=key, resolved_at__isnull=True)), timezone.now())


def _resolve(alerts: list[Alert], now: datetime) -> int:
    resolved = 0
    for alert in alerts:
        with transaction.atomic():
            # Guarded: a concurrent sweep that resolved it first makes this one a no-op.
            if not Alert.objects.filter(pk=alert.pk, resolved_at__isnull=True).update(resolved_at=now):
                continue
            alert.resolved_at = now
            progress_publish(
                topic=alert.progress_topic, kind="end", text="resolved", state=_state(alert), owner_id=alert.owner_id
            )
            resolved += 1
    return resolved


def _state(alert: Alert) -> dict[str, Any]:
    return {
        "alert": alert.pk,
        "key": alert.key,
        "rule": alert.rule.name if alert.rule else "",
        "topic": alert.topic,
        "message": alert.message,
        "raised_at": alert.raised_at.isoformat(),
        "resolved_at": alert.resolved_at.isoformat() if alert.resolved_at else None,
    }


# --- Rules ----------------------------------------------------------------------------------------


def _minutes(value: float) -> str:
    return f"{value:.0f} min" if value >= 1 else f"{value * 60:.0f} s"


def _live(rule: WatchRule) -> Any:
    topics = ProgressTopic.objects.filter(ended_at__isnull=True)
    return (
        topics.filter(topic__startswith=rule.prefix)
        if rule.pattern.endswith("*")
        else topics.filter(topic=rule.pattern)
    )


def _older_than(rule: WatchRule, now: datetime, field: str, what: str) -> list[tuple[str, str, int | None]]:
    """Live topics whose `field` (`updated_at`: last event; `started_at`: start) is past the limit."""
    cutoff = now - timedelta(minutes=rule.minutes)
    rows = (
        _live(rule)
        .filter(**{f"{field}__lt": cutoff})
        .order_by(field)
        .values_list("topic", field, "owner_id")[:SWEEP_LIMIT]
    )
    return [(t, f"{t}: {what} {_minutes((now - at).total_seconds() / 60)}", o) for t, at, o in rows]


def _silent(rule: WatchRule, now: datetime) -> list[tuple[str, str, int | None]]:
    return _older_than(rule, now, "updated_at", "no event for")


def _running(rule: WatchRule, now: datetime) -> list[tuple[str, str, int | None]]:
    return _older_than(rule, now, "started_at", "running for")


def _fold_durations(rule: WatchRule, now: datetime) -> None:
    """Add the running times of the topics that ended since the last sweep to their name's samples."""
    since = rule.last_swept_at or now - timedelta(days=1)
    ended = ProgressTopic.objects.filter(
        topic__startswith=rule.prefix, updated_at__gte=since, updated_at__lt=now, ended_at__isnull=False
    ).values_list("name", "started_at", "ended_at")[: SWEEP_LIMIT * 10]
    fresh: dict[str, list[float]] = {}
    for name, started, ended_at in ended:
        if ended_at is None:
            continue
        fresh.setdefault(f"{rule.prefix}{name}", []).append(max(0.0, (ended_at - started).total_seconds()))
    if not fresh:
        return
    stored = {s.key: s for s in DurationSample.objects.filter(key__in=list(fresh))}
    for key, seconds in fresh.items():
        sample = stored.get(key) or DurationSample(key=key[:300], seconds=[])
        sample.seconds = (list(sample.seconds) + seconds)[-P95_KEEP:]
        sample.save()


def p95(values: list[float]) -> float:
    """The 95th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def _running_p95(rule: WatchRule, now: datetime) -> list[tuple[str, str, int | None]]:
    _fold_durations(rule, now)
    cutoff = now - timedelta(minutes=rule.minutes)
    rows = list(
        _live(rule)
        .filter(started_at__lt=cutoff)
        .order_by("started_at")
        .values_list("topic", "name", "started_at", "owner_id")[:SWEEP_LIMIT]
    )
    samples = {
        s.key: s.seconds
        for s in DurationSample.objects.filter(key__in={f"{rule.prefix}{name}" for _, name, _, _ in rows})
    }
    found = []
    for topic, name, started, owner in rows:
        seconds = samples.get(f"{rule.prefix}{name}") or []
        if len(seconds) < P95_MIN_SAMPLES:
            continue
        usual, running = p95(seconds), (now - started).total_seconds()
        if running > usual:
            message = f"{topic} ({name}): running for {_minutes(running / 60)}, usually at most {_minutes(usual / 60)}"
            found.append((topic, message, owner))
    return found


def _stalled(rule: WatchRule, now: datetime) -> list[tuple[str, str, int | None]]:
    value_field, busy_field = rule.value_field or "percentDone", rule.busy_field or "numComputing"
    rows = list(_live(rule).order_by("-updated_at").values_list("topic", "state", "owner_id")[:SWEEP_LIMIT])
    busy = {t: (s.get(value_field), o) for t, s, o in rows if isinstance(s, dict) and (s.get(busy_field) or 0) > 0}
    marks = {m.topic: m for m in WatchMark.objects.filter(rule=rule)}
    cutoff = now - timedelta(minutes=rule.minutes)
    found, moved = [], []
    for topic, (value, owner) in busy.items():
        mark = marks.pop(topic, None)
        if mark is None or mark.value != value:
            moved.append(WatchMark(rule=rule, topic=topic, value=value, since=now))
        elif mark.since < cutoff:
            held = _minutes((now - mark.since).total_seconds() / 60)
            found.append((topic, f"{topic}: {value_field} at {value} for {held} while busy", owner))
    # One statement for every topic whose value moved (or that began to be watched).
    WatchMark.objects.bulk_create(
        moved, update_conflicts=True, unique_fields=["rule", "topic"], update_fields=["value", "since"]
    )
    if len(rows) < SWEEP_LIMIT:  # marks of topics no longer busy (or gone) are forgotten
        WatchMark.objects.filter(pk__in=[m.pk for m in marks.values()]).delete()
    return found


_EVALUATORS = {
    WatchRule.Kind.SILENT: _silent,
    WatchRule.Kind.RUNNING: _running,
    WatchRule.Kind.RUNNING_P95: _running_p95,
    WatchRule.Kind.STALLED: _stalled,
}


def watchdog_sweep(*, now: datetime | None = None) -> dict[str, int]:
    """Evaluate every enabled rule once: raise the alerts that hold, resolve those that cleared."""
    now = now or timezone.now()
    conditions = watch_conditions()
    raised = resolved = 0
    for rule in WatchRule.objects.filter(enabled=True):
        found = _EVALUATORS[WatchRule.Kind(rule.kind)](rule, now)
        complete = len(found) < SWEEP_LIMIT
        if rule.only_if:
            condition = conditions.get(rule.only_if)
            keys = condition([topic[len(rule.prefix) :] for topic, _, _ in found]) if condition else set()
            found = [f for f in found if f[0][len(rule.prefix) :] in keys]
        holding = {f"rule:{rule.pk}:{topic}": (topic, message, owner) for topic, message, owner in found}
        open_alerts = {a.key: a for a in Alert.objects.filter(rule=rule, resolved_at__isnull=True)}
        for key, (topic, message, owner) in holding.items():
            if key not in open_alerts and alert_raise(key=key, message=message, topic=topic, owner_id=owner, rule=rule):
                raised += 1
        if complete:
            resolved += _resolve([a for k, a in open_alerts.items() if k not in holding], now)
        WatchRule.objects.filter(pk=rule.pk).update(last_swept_at=now)
    # Alerts of rules disabled or deleted since resolve too: nothing watches them any more.
    orphans = Alert.objects.filter(resolved_at__isnull=True, key__startswith="rule:").exclude(rule__enabled=True)
    resolved += _resolve(list(orphans), now)
    return {"raised": raised, "resolved": resolved}


def watchdog_sweep_if_due() -> dict[str, int] | None:
    """Run the sweep if no process ran it in the last SWEEP_EVERY_SECONDS (called by each job
    cluster's sweep loop; the shared cache's atomic add elects one)."""
    if not cache.add(_DUE_KEY, 1, timeout=SWEEP_EVERY_SECONDS):
        return None
    try:
        result = watchdog_sweep()
    except Exception:  # a broken rule must not stop the jobs sweep that calls this
        logger.exception("The watchdog sweep failed")
        return None
    if result["raised"] or result["resolved"]:
        logger.info("watchdog: %(raised)d alert(s) raised, %(resolved)d resolved", result)
    return result
