"""Publishing progress: the one entry point every app uses.

`progress_publish()` is called by `pool`, `farm` and `jobs` (and by the socket listener) after
their own writes. Inside a transaction the event is stored in that same transaction (no commit of
its own) and delivered once it commits; a rollback takes the event with it. Outside one it is
stored and delivered at once. `progress` itself imports no other app: it knows topics, not domains.

Every event is first stored (`ProgressEvent`, increasing ids: replay, `Last-Event-ID`, retention)
together with the latest state of its topic (`ProgressTopic`: snapshots for late joiners, the
Live page). Delivery to the ASGI processes then depends on the transport (see `progress.hub`):
with Redis the batch is also sent to one channel-layer group; without Redis every ASGI process
polls the event table. See docs/progress.md for why.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Literal

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from progress import conf, metrics
from progress.events import Event
from progress.models import ProgressEvent, ProgressTopic, StreamLease

logger = logging.getLogger(__name__)

EventKind = Literal["new", "msg", "end"]
# Consumers of published events by topic (the webhooks), each called with every event that
# `progress_publish` stores, in the publisher's transaction: what they write commits or rolls back
# with the event. They must be cheap for the events they ignore (most are `msg`).
_listeners: list[Callable[[Event], None]] = []
_TOPIC_FIELDS = [
    "name",
    "text",
    "error",
    "state",
    "owner_id",
    "last_kind",
    "last_event_id",
    "started_at",
    "updated_at",
    "ended_at",
]
_prune_lock = threading.Lock()
_last_prune = 0.0


def layer_group() -> str:
    """The channel-layer group of this deployment: named after its database, so that test runs
    or deployments sharing one Redis never see each other's events."""
    db = settings.DATABASES["default"]
    name = connection.settings_dict.get("NAME") or db.get("NAME")
    digest = hashlib.sha1(f"{db.get('HOST')}:{db.get('PORT')}/{name}".encode()).hexdigest()[:16]
    return f"progress.events.{digest}"


def group_name(topic: str) -> str:
    """Channels group names allow only [a-zA-Z0-9._-]; topics look like `run:<uuid>`."""
    return "progress." + "".join(c if c.isalnum() or c in "._-" else "." for c in topic)[:90]


def progress_publish(
    *,
    topic: str,
    kind: EventKind,
    text: str = "",
    state: dict[str, Any] | None = None,
    owner_id: int | None = None,
) -> None:
    """Publish one progress event on `topic`: stored with the caller's writes, delivered after commit.

    `text` is what the seed's front-end shows (the name for `new`, the message for `msg`, the
    error or "" for `end`); `state` is structured data for live admin pages (percentages,
    counts); `owner_id` is the user allowed to see it besides admins (None: admins only).

    Inside a transaction (`atomic`) the event and its topic are written in that transaction, so
    the event exists iff the caller's writes commit and costs no commit of its own; the topic's
    row stays locked until then, so keep hot topics out of long transactions (farm throttles its
    run events). Outside a transaction it is stored in autocommit mode (one statement on
    PostgreSQL). Either way it is broadcast (Redis transport) only after the commit, and a failed
    broadcast is logged, never raised: progress never breaks the caller's committed work.
    """
    _hand_on(_store_one(_pending(topic=topic, kind=kind, text=text, state=state, owner_id=owner_id)))


def _pending(
    *, topic: str, kind: str, text: str = "", state: dict[str, Any] | None = None, owner_id: int | None = None
) -> dict[str, Any]:
    if kind not in ("new", "msg", "end"):
        raise ValueError(f"unknown progress event kind {kind!r}")
    return {
        "topic": str(topic)[:200],
        "kind": kind,
        "text": str(text),
        "state": dict(state or {}),
        "owner_id": owner_id,
    }


def _hand_on(events: list[Event]) -> None:
    """Give stored events to the listeners (in the caller's transaction) and broadcast them after
    its commit: the one way every published event leaves `progress_publish(_many)`."""
    for listener in _listeners:
        for event in events:
            listener(event)
    if events and conf.transport() == "layer":

        def send() -> None:
            try:
                async_to_sync(events_broadcast)(events)
            except Exception:  # progress is best effort: never break the caller's committed work
                logger.exception("Publishing %d progress events failed", len(events))

        transaction.on_commit(send)


def progress_listen(listener: Callable[[Event], None]) -> None:
    """Have `listener` called with every event `progress_publish` stores (in its transaction)."""
    if listener not in _listeners:
        _listeners.append(listener)


def progress_publish_many(events: list[dict[str, Any]]) -> None:
    """`progress_publish` for a batch (dicts with its keyword arguments): stored together in the
    caller's transaction, broadcast once after its commit. For fan-outs such as a rollout waking
    the devices it released."""
    pending = [_pending(**event) for event in events]
    _hand_on(events_store(pending))


def events_deliver(pending: list[dict[str, Any]]) -> list[Event]:
    """Store events and, with the Redis transport, send them to every ASGI process (sync callers)."""
    events = events_store(pending)
    if conf.transport() == "layer":
        async_to_sync(events_broadcast)(events)
    return events


def events_store(pending: list[dict[str, Any]]) -> list[Event]:
    """Store a batch of events and fold them into the latest state of their topics.

    Inside a transaction this joins it (no savepoint, no commit of its own)."""
    if not pending:
        return []
    if len(pending) == 1 and connection.vendor == "postgresql":
        return _store_one(pending[0])
    metrics.events_stored(pending)
    now = timezone.now()
    with transaction.atomic(savepoint=False):
        rows = ProgressEvent.objects.bulk_create(
            [
                ProgressEvent(
                    topic=p["topic"],
                    kind=p["kind"],
                    text=p["text"],
                    state=p["state"],
                    owner_id=p["owner_id"],
                    created_at=now,
                )
                for p in pending
            ]
        )
        topics = {t.topic: t for t in ProgressTopic.objects.filter(topic__in={r.topic for r in rows})}
        for row in rows:
            _fold(topics, row)
        ProgressTopic.objects.bulk_create(
            list(topics.values()), update_conflicts=True, unique_fields=["topic"], update_fields=_TOPIC_FIELDS
        )
    _prune_soon()
    at = now.timestamp()
    return [
        Event(id=int(r.pk), topic=r.topic, kind=r.kind, text=r.text, state=r.state, owner_id=r.owner_id, at=at)
        for r in rows
    ]


def _store_one(p: dict[str, Any]) -> list[Event]:
    """Store one event and fold it into its topic: on PostgreSQL one statement (the event insert
    and the topic upsert, with the fold written in SQL); elsewhere the batch path."""
    if connection.vendor != "postgresql":
        return events_store([p])
    now = timezone.now()
    kind, text, topic = p["kind"], p["text"], p["topic"]
    state = json.dumps(p["state"])
    qn = connection.ops.quote_name
    merged = "(CASE WHEN jsonb_typeof(t.state) = 'object' THEN t.state ELSE '{}'::jsonb END) || EXCLUDED.state"
    sets = {
        "new": ["name", "text", "error", "state", "started_at", "ended_at"],
        "msg": ["text"],
        "end": ["error", "ended_at"],
    }[kind]
    assignments = [f"{c} = EXCLUDED.{c}" for c in sets]
    if kind != "new":
        assignments.append(f"state = {merged}")
    assignments += [
        "owner_id = COALESCE(EXCLUDED.owner_id, t.owner_id)",
        "last_kind = EXCLUDED.last_kind",
        "last_event_id = EXCLUDED.last_event_id",
        "updated_at = EXCLUDED.updated_at",
    ]
    sql = (
        f"WITH e AS (INSERT INTO {qn(ProgressEvent._meta.db_table)} "
        f"(topic, kind, text, state, owner_id, created_at) VALUES (%s, %s, %s, %s::jsonb, %s, %s) RETURNING id) "
        f"INSERT INTO {qn(ProgressTopic._meta.db_table)} AS t (topic, name, text, error, state, owner_id, "
        f"last_kind, last_event_id, started_at, updated_at, ended_at) "
        f"SELECT %s, %s, %s, %s, %s::jsonb, %s, %s, e.id, %s, %s, %s FROM e "
        f"ON CONFLICT (topic) DO UPDATE SET {', '.join(assignments)} RETURNING t.last_event_id"
    )
    params = [
        topic,
        kind,
        text,
        state,
        p["owner_id"],
        now,
        topic,
        (text if kind == "new" else topic)[:200],
        text if kind == "msg" else "",
        text if kind == "end" else "",
        state,
        p["owner_id"],
        kind,
        now,
        now,
        now if kind == "end" else None,
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        [event_id] = cursor.fetchone()
    metrics.events_stored([p])
    _prune_soon()
    return [
        Event(
            id=int(event_id),
            topic=topic,
            kind=kind,
            text=text,
            state=p["state"],
            owner_id=p["owner_id"],
            at=now.timestamp(),
        )
    ]


def _fold(topics: dict[str, ProgressTopic], row: ProgressEvent) -> None:
    topic = topics.get(row.topic)
    if topic is None:
        topic = topics[row.topic] = ProgressTopic(
            topic=row.topic, name=row.topic[:200], state={}, started_at=row.created_at
        )
    if row.kind == "new":
        topic.name, topic.text, topic.error = row.text[:200], "", ""
        topic.state, topic.started_at, topic.ended_at = dict(row.state), row.created_at, None
    else:
        topic.state = {**(topic.state or {}), **row.state}
        if row.kind == "msg":
            topic.text = row.text
        else:
            topic.error, topic.ended_at = row.text, row.created_at
    if row.owner_id is not None:
        topic.owner_id = row.owner_id
    topic.last_kind, topic.last_event_id, topic.updated_at = row.kind, int(row.pk), row.created_at


async def events_broadcast(events: list[Event]) -> None:
    """Send stored events to every ASGI process through the channel layer (Redis transport)."""
    layer = get_channel_layer()
    if layer is not None and events:
        await layer.group_send(layer_group(), {"type": "progress.batch", "events": events})


def progress_prune() -> tuple[int, int]:
    """Delete events older than the retention window, and topics ended (or silent for a week) before it."""
    now = timezone.now()
    cutoff = now - timedelta(seconds=conf.retention_seconds())
    events, _ = ProgressEvent.objects.filter(created_at__lt=cutoff).delete()
    ended, _ = ProgressTopic.objects.filter(ended_at__lt=cutoff).delete()
    stale, _ = ProgressTopic.objects.filter(ended_at__isnull=True, updated_at__lt=now - timedelta(days=7)).delete()
    StreamLease.objects.filter(expires_at__lte=now).delete()  # slots of processes that died
    return events, ended + stale


def _prune_soon() -> None:
    """Prune at most once a minute per process, after the current transaction (never inside it)."""
    if time.monotonic() - _last_prune >= 60:
        transaction.on_commit(_prune_now_and_then)


def _prune_now_and_then() -> None:
    global _last_prune
    with _prune_lock:
        if time.monotonic() - _last_prune < 60:
            return
        _last_prune = time.monotonic()
    progress_prune()


def streams_end_orphans(reason: str) -> list[Event]:
    """End socket streams left live by a listener that died (their connections are gone)."""
    orphans = list(
        ProgressTopic.objects.filter(topic__startswith="stream:", ended_at__isnull=True).values_list("topic", flat=True)
    )
    return events_store([{"topic": t, "kind": "end", "text": reason, "state": {}, "owner_id": None} for t in orphans])


def stream_lease_acquire(*, user_id: int, now: datetime | None = None) -> int | None:
    """Take a free stream slot of the user (across all processes); its lease id, or None at the cap."""
    now = now or timezone.now()
    # A slot whose holder stopped renewing (its process died) is free again; the `expires_at`
    # filter keeps a lease another process just took or renewed.
    StreamLease.objects.filter(user_id=user_id, expires_at__lte=now).delete()
    taken = set(StreamLease.objects.filter(user_id=user_id).values_list("slot", flat=True))
    expires_at = now + timedelta(seconds=conf.lease_seconds())
    for slot in range(conf.streams_per_user()):
        if slot in taken:
            continue
        try:
            # The unique (user, slot) constraint is the guard: of two processes taking the same
            # free slot at once one insert fails, and that one tries the next slot.
            with transaction.atomic():
                return int(StreamLease.objects.create(user_id=user_id, slot=slot, expires_at=expires_at).pk)
        except IntegrityError:
            continue
    return None


def stream_lease_renew(*, lease_id: int, now: datetime | None = None) -> bool:
    """Extend a held lease; False when it is gone (expired and taken over, or the user deleted)."""
    expires_at = (now or timezone.now()) + timedelta(seconds=conf.lease_seconds())
    return StreamLease.objects.filter(pk=lease_id).update(expires_at=expires_at) == 1


def stream_lease_release(*, lease_id: int) -> None:
    """Give a slot back when its stream ends."""
    StreamLease.objects.filter(pk=lease_id).delete()
