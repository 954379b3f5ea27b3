"""Reading progress: who sees what, replay after an id, and the snapshot of live topics."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.db.models import F, Max, Min, Q, QuerySet

from progress.events import Event
from progress.models import Alert, ProgressEvent, ProgressTopic

REPLAY_LIMIT = 10000
STATE_LIMIT = 1000  # topics sent on a subscription to `*`: the most recent live ones first


@dataclass(frozen=True)
class Viewer:
    """A reader of progress: everything (admins, PROGRESS_PUBLIC), or its own user's events and
    the system topics (no owner) it was granted by name (the operations dashboard's, for staff)."""

    sees_all: bool
    user_id: int | None = None
    system_topics: frozenset[str] = frozenset()

    def can_see(self, event: Event) -> bool:
        if self.sees_all:
            return True
        if event["owner_id"] is None:
            return event["topic"] in self.system_topics
        return self.user_id is not None and event["owner_id"] == self.user_id

    def visible(self) -> Q:
        if self.sees_all:
            return Q()
        granted = Q(owner_id__isnull=True, topic__in=sorted(self.system_topics)) if self.system_topics else Q(pk__in=[])
        if self.user_id is None:
            return granted
        return Q(owner_id=self.user_id) | granted


def _topic_filter(topics: Iterable[str] | None) -> Q:
    chosen = set(topics or ())
    if not chosen or "*" in chosen:
        return Q()
    return Q(topic__in=chosen)


def event_from_row(row: ProgressEvent) -> Event:
    return Event(
        id=int(row.pk),
        topic=row.topic,
        kind=row.kind,
        text=row.text,
        state=row.state or {},
        owner_id=row.owner_id,
        at=row.created_at.timestamp(),
    )


def event_latest_id() -> int:
    """The id of the newest stored event (0 when there is none)."""
    return int(ProgressEvent.objects.aggregate(m=Max("id"))["m"] or 0)


def event_replay_possible(after_id: int) -> bool:
    """Whether every event after `after_id` is still stored (nothing pruned in between)."""
    oldest = ProgressEvent.objects.aggregate(m=Min("id"))["m"]
    return oldest is None or oldest <= after_id + 1 or after_id >= event_latest_id()


def event_list_after(
    *, viewer: Viewer, after_id: int, topics: Iterable[str] | None = None, limit: int = REPLAY_LIMIT
) -> list[Event]:
    """Events after `after_id` that the viewer may see, oldest first."""
    rows = ProgressEvent.objects.filter(viewer.visible(), _topic_filter(topics), id__gt=after_id).order_by("id")[:limit]
    return [event_from_row(row) for row in rows]


def topic_list(
    *, viewer: Viewer, topics: Iterable[str] | None = None, live_only: bool = False
) -> QuerySet[ProgressTopic]:
    """Topics the viewer may see; live ones first, the most recently updated first."""
    qs = ProgressTopic.objects.filter(viewer.visible(), _topic_filter(topics))
    if live_only:
        qs = qs.filter(ended_at__isnull=True)
    return qs.order_by(F("ended_at").asc(nulls_first=True), "-updated_at")


def topic_snapshot_events(*, viewer: Viewer, topics: Iterable[str] | None = None) -> list[Event]:
    """For every live topic: one `new` (its name) and, if it has one, its latest `msg`."""
    events: list[Event] = []
    for topic in topic_list(viewer=viewer, topics=topics, live_only=True).order_by("started_at", "id"):
        base = {
            "id": topic.last_event_id,
            "topic": topic.topic,
            "owner_id": topic.owner_id,
            "state": topic.state or {},
            "at": topic.updated_at.timestamp(),
        }
        events.append(Event(kind="new", text=topic.name, **base))  # type: ignore[typeddict-item]
        if topic.last_kind == "msg" or topic.text:
            events.append(Event(kind="msg", text=topic.text, **base))  # type: ignore[typeddict-item]
    return events


def topic_state_events(*, viewer: Viewer, topics: Iterable[str]) -> list[Event]:
    """The current state of each named topic (live or ended) as one event of its last kind."""
    return [
        Event(
            id=t.last_event_id,
            topic=t.topic,
            kind=t.last_kind,
            text=t.name if t.last_kind == "new" else (t.error if t.last_kind == "end" else t.text),
            state=t.state or {},
            owner_id=t.owner_id,
            at=t.updated_at.timestamp(),
        )
        for t in topic_list(viewer=viewer, topics=topics)[:STATE_LIMIT]
    ]


def alert_list_open() -> QuerySet[Alert]:
    """Open alerts, newest first: the dashboard's "needs attention" list."""
    return Alert.objects.filter(resolved_at__isnull=True).select_related("rule").order_by("-raised_at")
