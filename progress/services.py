"""Publishing progress: the one entry point every app uses.

`progress_publish()` is called by `pool`, `farm` and `jobs` (and by the socket listener) after
their own writes; the event leaves only once the surrounding transaction has committed.
`progress` itself imports no other app: it knows topics, not domains.

Every event is first stored (`ProgressEvent`, increasing ids: replay, `Last-Event-ID`, retention)
together with the latest state of its topic (`ProgressTopic`: snapshots for late joiners, the
Live page). Delivery to the ASGI processes then depends on the transport (see `progress.hub`):
with Redis the batch is also sent to one channel-layer group; without Redis every ASGI process
polls the event table. See docs/progress.md for why.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from datetime import timedelta
from typing import Any, Literal

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from progress import conf
from progress.events import Event
from progress.models import ProgressEvent, ProgressTopic

logger = logging.getLogger(__name__)

EventKind = Literal["new", "msg", "end"]
_TOPIC_FIELDS = ["name", "text", "error", "state", "owner_id", "last_kind", "last_event_id",
                 "started_at", "updated_at", "ended_at"]
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
    """Publish one progress event on `topic` once the current transaction commits.

    `text` is what the seed's front-end shows (the name for `new`, the message for `msg`, the
    error or "" for `end`); `state` is structured data for live admin pages (percentages,
    counts); `owner_id` is the user allowed to see it besides admins (None: admins only).
    """
    if kind not in ("new", "msg", "end"):
        raise ValueError(f"unknown progress event kind {kind!r}")
    pending = {"topic": str(topic)[:200], "kind": kind, "text": str(text), "state": dict(state or {}),
               "owner_id": owner_id}

    def send() -> None:
        try:
            events_deliver([pending])
        except Exception:  # progress is best effort: never break the caller's committed work
            logger.exception("Publishing progress on %s failed", topic)

    transaction.on_commit(send)


def events_deliver(pending: list[dict[str, Any]]) -> list[Event]:
    """Store events and, with the Redis transport, send them to every ASGI process (sync callers)."""
    events = events_store(pending)
    if conf.transport() == "layer":
        async_to_sync(events_broadcast)(events)
    return events


def events_store(pending: list[dict[str, Any]]) -> list[Event]:
    """Store a batch of events and fold them into the latest state of their topics."""
    if not pending:
        return []
    now = timezone.now()
    with transaction.atomic():
        rows = ProgressEvent.objects.bulk_create(
            [ProgressEvent(topic=p["topic"], kind=p["kind"], text=p["text"], state=p["state"],
                           owner_id=p["owner_id"], created_at=now) for p in pending]
        )
        topics = {t.topic: t for t in ProgressTopic.objects.filter(topic__in={r.topic for r in rows})}
        for row in rows:
            _fold(topics, row)
        ProgressTopic.objects.bulk_create(
            list(topics.values()), update_conflicts=True, unique_fields=["topic"], update_fields=_TOPIC_FIELDS
        )
    _prune_now_and_then()
    at = now.timestamp()
    return [Event(id=int(r.pk), topic=r.topic, kind=r.kind, text=r.text, state=r.state, owner_id=r.owner_id, at=at)
            for r in rows]


def _fold(topics: dict[str, ProgressTopic], row: ProgressEvent) -> None:
    topic = topics.get(row.topic)
    if topic is None:
        topic = topics[row.topic] = ProgressTopic(topic=row.topic, name=row.topic[:200], state={},
                                                  started_at=row.created_at)
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
    return events, ended + stale


def _prune_now_and_then() -> None:
    global _last_prune
    with _prune_lock:
        if time.monotonic() - _last_prune < 60:
            return
        _last_prune = time.monotonic()
    progress_prune()


def streams_end_orphans(reason: str) -> list[Event]:
    """End socket streams left live by a listener that died (their connections are gone)."""
    orphans = list(ProgressTopic.objects.filter(topic__startswith="stream:", ended_at__isnull=True)
                   .values_list("topic", flat=True))
    return events_store([{"topic": t, "kind": "end", "text": reason, "state": {}, "owner_id": None} for t in orphans])
