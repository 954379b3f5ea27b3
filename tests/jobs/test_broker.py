"""The broker queues delayed jobs at their time: it knows the earliest due time and is told of new ones."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone
from django_q.models import OrmQ

from coordinator.models import User
from jobs import conf
from jobs.broker import ListenNotifyBroker
from jobs.models import Job
from jobs.services import job_create

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_broker_queues_a_delayed_job_once_it_is_due(user: User) -> None:
    broker = ListenNotifyBroker(list_key="delayed-test")
    try:
        job = job_create(
            type="test.main.add", data={"x": 1, "y": 1}, user=user, run_after=timezone.now() + timedelta(hours=1)
        )
        broker._queue_due()
        assert OrmQ.objects.count() == 0
        Job.objects.filter(pk=job.pk).update(run_after=timezone.now())
        broker._next_due = None  # as after a notification or (SQLite) on every poll
        broker._queue_due()
        assert OrmQ.objects.count() == 1 and Job.objects.get(pk=job.pk).queued_at is not None
    finally:
        broker.close()


def test_on_postgres_a_delayed_job_sets_the_brokers_wake_up_time(user: User, monkeypatch: pytest.MonkeyPatch) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL only")
    monkeypatch.setattr(conf, "LISTEN_TIMEOUT_SECONDS", 3600.0)
    monkeypatch.setattr(conf, "sweep_seconds", lambda: 3600.0)
    broker = ListenNotifyBroker(list_key="delayed-test")
    try:
        broker._next_sweep = time.monotonic() + 3600
        broker._listen()
        broker._queue_due()
        assert broker._sleep_seconds() > 3000  # nothing delayed: only the fallback poll and the sweep bound it
        due = timezone.now() + timedelta(seconds=120)
        job_create(type="test.main.add", data={"x": 1, "y": 1}, user=user, run_after=due)
        assert broker._wait(30) is True  # woken by the job's NOTIFY, not by a poll
        assert broker._next_due == pytest.approx(due.timestamp(), abs=0.001)
        assert broker._sleep_seconds() <= 120
    finally:
        broker.close()


def test_a_cluster_named_for_queues_takes_only_their_entries(user: User) -> None:
    from jobs.broker import served_keys

    job_create(type="csv_export", data={}, user=user)  # exports
    job_create(type="test.main.add", data={"x": 1, "y": 1}, user=user)  # default
    assert served_keys("coordinator") is None  # a plain cluster serves every queue
    # Named queues bring their priority bands (django-tasks `priority`): `--queue default` runs them.
    assert served_keys("exports,default") == [
        "coordinator",
        "default-high",
        "default-low",
        "exports",
        "exports,default",
        "exports-high",
        "exports-low",
    ]
    exports = ListenNotifyBroker(list_key="exports")
    default = ListenNotifyBroker(list_key="default")
    try:
        assert [OrmQ.objects.get(pk=pk).key for pk, _ in exports._take()] == ["exports"]
        assert exports._take() == []
        assert [OrmQ.objects.get(pk=pk).key for pk, _ in default._take()] == ["coordinator"]
    finally:
        exports.close()
        default.close()


def test_back_from_a_database_outage_the_broker_waits_a_stale_period_before_recovering(
    user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Heartbeats missed while the database was down say nothing about their workers: right after
    an outage a silent job stays `started`; one stale period later it is recovered."""
    from django.db import OperationalError

    from jobs import services
    from jobs.services import job_claim

    job = job_create(type="test.main.add", data={"x": 1, "y": 1}, user=user)
    assert job_claim(job_id=job.pk, worker="elsewhere:1")
    Job.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=conf.stale_seconds() * 2))
    broker = ListenNotifyBroker(list_key="outage-test")
    real_sweep = services.jobs_sweep
    try:

        def unreachable(**_: object) -> None:
            raise OperationalError("could not connect to server")

        monkeypatch.setattr(services, "jobs_sweep", unreachable)
        broker._maybe_sweep()
        monkeypatch.setattr(services, "jobs_sweep", real_sweep)
        broker._next_sweep = 0.0
        broker._maybe_sweep()  # the database is back
        assert Job.objects.get(pk=job.pk).status == "started"
        assert broker._database_since is not None
        broker._database_since -= conf.stale_seconds()  # one stale period later
        broker._next_sweep = 0.0
        broker._maybe_sweep()
        assert Job.objects.get(pk=job.pk).status == "fresh"
    finally:
        broker.close()


def test_a_broker_that_never_lost_the_database_recovers_at_once(user: User) -> None:
    from jobs.services import job_claim

    job = job_create(type="test.main.add", data={"x": 1, "y": 1}, user=user)
    assert job_claim(job_id=job.pk, worker="elsewhere:1")
    Job.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=conf.stale_seconds() * 2))
    broker = ListenNotifyBroker(list_key="outage-test")
    try:
        broker._maybe_sweep()
        assert Job.objects.get(pk=job.pk).status == "fresh"
    finally:
        broker.close()


def test_a_queues_high_band_is_taken_first_and_its_low_band_last_by_the_cluster_serving_it(
    user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django_q.conf import Conf

    from jobs.services import _queued_job_id
    from tests.jobs import sample_tasks

    monkeypatch.setattr(Conf, "BULK", 10)
    # Queued in this order: low, normal, high, normal.
    results = [
        sample_tasks.calculate_meaning_of_life.using(priority=-5).enqueue(),
        sample_tasks.calculate_meaning_of_life.enqueue(),
        sample_tasks.calculate_meaning_of_life.using(priority=5).enqueue(),
        sample_tasks.calculate_meaning_of_life.enqueue(),
    ]
    low, first, high, second = (Job.objects.get(uuid=result.id).pk for result in results)
    for name in ("default", "coordinator"):  # `qcluster --queue default`, and a plain cluster
        OrmQ.objects.update(lock=timezone.now() - timedelta(seconds=1))
        broker = ListenNotifyBroker(list_key=name)
        try:
            taken = [_queued_job_id(OrmQ.objects.get(pk=pk)) for pk, _ in broker._take()]
        finally:
            broker.close()
        assert taken == [high, first, second, low]


def test_on_postgres_the_claim_reads_the_queue_in_its_order_index_not_a_sort(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the claim's index is PostgreSQL only")
    # A long queue (10,000 schedules fired at once): a claim that sorted it would cost the whole
    # queue per job; the index in the claim's order keeps it one entry.
    OrmQ.objects.bulk_create(
        OrmQ(key="coordinator", payload="x", lock=timezone.now() - timedelta(seconds=1)) for _ in range(3000)
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE django_q_ormq")
    seen: list[tuple[str, Any]] = []

    def capture(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        seen.append((sql, params))
        return execute(sql, params, many, context)

    broker = ListenNotifyBroker(list_key="coordinator")
    try:
        with connection.execute_wrapper(capture):
            assert len(broker._take()) == 1
    finally:
        broker.close()
    sql, params = seen[-1]
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "jobs_ormq_claim_order" in plan and "Sort" not in plan
