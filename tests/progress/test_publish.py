"""`progress_publish` stores the event with the caller's writes and delivers it after commit."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection, transaction

from progress import services
from progress.models import ProgressEvent, ProgressTopic
from progress.services import events_store, progress_publish

pytestmark = pytest.mark.django_db(transaction=True)


class Boom(Exception):
    pass


def test_inside_a_transaction_the_event_commits_or_rolls_back_with_the_callers_writes() -> None:
    with pytest.raises(Boom), transaction.atomic():
        progress_publish(topic="job:1", kind="new", text="export")
        assert ProgressEvent.objects.filter(topic="job:1").count() == 1  # stored in the caller's transaction
        raise Boom
    assert not ProgressEvent.objects.filter(topic="job:1").exists()
    assert not ProgressTopic.objects.filter(topic="job:1").exists()
    with transaction.atomic():
        progress_publish(topic="job:1", kind="new", text="export")
    assert ProgressEvent.objects.filter(topic="job:1").count() == 1
    progress_publish(topic="job:1", kind="end")  # outside a transaction: stored at once
    assert list(ProgressEvent.objects.filter(topic="job:1").values_list("kind", flat=True)) == ["new", "end"]


def test_broadcast_only_after_commit(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("progress.conf.transport", lambda: "layer")
    sent: list[list[Any]] = []

    async def broadcast(events: list[Any]) -> None:
        sent.append(events)

    monkeypatch.setattr(services, "events_broadcast", broadcast)
    with transaction.atomic():
        progress_publish(topic="job:2", kind="new", text="x")
        assert sent == []
    assert [[e["kind"] for e in batch] for batch in sent] == [["new"]]
    with pytest.raises(Boom), transaction.atomic():
        progress_publish(topic="job:2", kind="msg", text="never")
        raise Boom
    assert len(sent) == 1  # a rolled-back event is never sent
    progress_publish(topic="job:2", kind="end")
    assert [batch[0]["kind"] for batch in sent] == ["new", "end"]
    assert sent[1][0]["id"] == ProgressEvent.objects.get(topic="job:2", kind="end").pk


def test_a_failed_broadcast_never_breaks_the_caller(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("progress.conf.transport", lambda: "layer")

    async def broadcast(events: list[Any]) -> None:
        raise ConnectionError("redis is down")

    monkeypatch.setattr(services, "events_broadcast", broadcast)
    with transaction.atomic():
        progress_publish(topic="job:3", kind="new", text="x")
    assert ProgressEvent.objects.filter(topic="job:3").exists()


SEQUENCE: list[dict[str, Any]] = [
    {"kind": "msg", "text": "before new", "state": {"a": 0}, "owner_id": None},
    {"kind": "new", "text": "n" * 250, "state": {"a": 1, "b": {"x": 1}}, "owner_id": 7},
    {"kind": "msg", "text": "half", "state": {"b": {"y": 2}, "c": None}, "owner_id": None},
    {"kind": "end", "text": "boom", "state": {"d": [1, 2]}, "owner_id": None},
    {"kind": "msg", "text": "after end", "state": {}, "owner_id": 8},
]

TOPIC_FIELDS = ["name", "text", "error", "state", "owner_id", "last_kind"]


def topic_row(topic: str) -> dict[str, Any]:
    row = ProgressTopic.objects.filter(topic=topic).values(*TOPIC_FIELDS, "last_event_id", "ended_at").get()
    last = ProgressEvent.objects.filter(topic=topic).order_by("-id").first()
    assert last is not None and row.pop("last_event_id") == last.pk
    row["ended"] = row.pop("ended_at") is not None
    if row["name"] == topic:  # a topic first seen without `new` is named after itself
        row["name"] = "<topic>"
    return row


@pytest.mark.parametrize("steps", range(1, len(SEQUENCE) + 1))
def test_one_event_at_a_time_folds_like_the_batch(steps: int) -> None:
    """The single-event path (one upsert statement on PostgreSQL) folds a topic exactly like the
    batch path (select, fold in Python, upsert) that the socket listener uses."""
    for event in SEQUENCE[:steps]:
        progress_publish(topic="one", **event)
    events_store(
        [{"topic": "batch", **event} for event in SEQUENCE[:steps]]
        + [{"topic": "other", "kind": "new", "text": "pad", "state": {}, "owner_id": None}]
    )
    assert topic_row("one") == topic_row("batch")


def test_folded_topic_after_new_msg_end_and_a_new_start() -> None:
    for event in SEQUENCE[1:4]:
        progress_publish(topic="t", **event)
    assert topic_row("t") == {
        "name": "n" * 200,
        "text": "half",
        "error": "boom",
        "owner_id": 7,
        "last_kind": "end",
        "state": {"a": 1, "b": {"y": 2}, "c": None, "d": [1, 2]},
        "ended": True,
    }
    progress_publish(topic="t", kind="new", text="again", state={"z": 1})
    assert topic_row("t") == {
        "name": "again",
        "text": "",
        "error": "",
        "owner_id": 7,
        "last_kind": "new",
        "state": {"z": 1},
        "ended": False,
    }


def test_one_statement_per_event_on_postgresql(django_assert_num_queries: Any) -> None:
    progress_publish(topic="q", kind="new", text="warm")  # the once-a-minute prune, content types
    # SQLite: BEGIN, insert, select the topic, upsert it, COMMIT
    expected = 1 if connection.vendor == "postgresql" else 5
    with django_assert_num_queries(expected):
        progress_publish(topic="q", kind="msg", text="m")
