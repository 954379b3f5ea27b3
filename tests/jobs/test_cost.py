"""What one no-op job costs the worker: statements and commits (issue 5's drain target).

Counts, not timings: a regression here (an extra save, a refresh, an event in its own
transaction) shows up as a different number."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.db import connection

from coordinator.models import User
from jobs.models import Job
from jobs.services import job_create, job_execute
from progress.models import ProgressEvent, ProgressTopic

pytestmark = pytest.mark.django_db(transaction=True)


@contextmanager
def counting() -> Iterator[dict[str, int]]:
    """Statements sent, and commits: outermost `atomic` commits plus autocommit statements."""
    seen = {"statements": 0, "commits": 0}
    real_commit = connection.commit

    def wrapper(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if sql not in ("BEGIN", "BEGIN IMMEDIATE", "COMMIT"):
            seen["statements"] += 1
            if not connection.in_atomic_block and connection.get_autocommit():
                seen["commits"] += 1
        return execute(sql, params, many, context)

    def commit() -> None:
        seen["commits"] += 1
        real_commit()

    connection.commit = commit  # type: ignore[method-assign]
    try:
        with connection.execute_wrapper(wrapper):
            yield seen
    finally:
        del connection.commit


def test_a_noop_job_costs_two_commits_and_emits_new_then_end(user: User) -> None:
    job_execute(job_id=job_create(type="noop", data={}, user=user).pk)  # warm caches, the first prune
    job = job_create(type="noop", data={}, user=user)
    with counting() as seen:
        # As the worker calls it (jobs.tasks.job_run gets the type with the queue entry).
        assert job_execute(job_id=job.pk, job_type=job.type) == "success"
    # claim + read + `new` in one transaction; result + its attempt row + `end` in another.
    # PostgreSQL: one statement per event; SQLite: insert, select the topic, upsert it.
    per_event = 1 if connection.vendor == "postgresql" else 3
    # The end also reads the webhook subscriptions (none here: nothing more); the start reads nothing.
    assert seen == {"statements": 4 + 2 * per_event + 1, "commits": 2}
    job.refresh_from_db()
    assert job.status == "success" and job.progress == 100 and job.attempts == 1
    events = list(ProgressEvent.objects.filter(topic=job.topic).values_list("kind", "state"))
    assert [kind for kind, _ in events] == ["new", "end"]
    assert events[0][1]["status"] == "started" and events[1][1] == {
        "status": "success",
        "label": "success",
        "percent": 100,
        "message": "",
    }
    topic = ProgressTopic.objects.get(topic=job.topic)
    assert (topic.name, topic.last_kind, topic.owner_id, topic.ended_at is not None) == ("noop", "end", user.pk, True)
    assert topic.state["worker"] == job.worker and topic.state["status"] == "success"


def test_a_claim_lost_to_another_worker_publishes_nothing(user: User) -> None:
    job = job_create(type="noop", data={}, user=user)
    Job.objects.filter(pk=job.pk).update(status="started", worker="elsewhere")
    assert job_execute(job_id=job.pk) == "skipped"
    assert not ProgressEvent.objects.filter(topic=job.topic).exists()
