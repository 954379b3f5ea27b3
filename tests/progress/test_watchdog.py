"""The silence watchdog: rules raise alerts and resolve them by themselves (an injected clock)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from coordinator.models import User
from pool.models import Delivery
from progress.models import Alert, ProgressEvent, ProgressTopic, WatchRule
from progress.selectors import alert_list_open
from progress.services import progress_publish
from progress.watchdog import watchdog_sweep
from tests.factories import DeliveryFactory, DeviceFactory, ProgressTopicFactory


@pytest.fixture
def t0() -> datetime:
    return timezone.now() - timedelta(hours=2)


def minutes(start: datetime, n: float) -> datetime:
    return start + timedelta(minutes=n)


def rule(**fields: Any) -> WatchRule:
    return WatchRule.objects.create(name=fields.pop("name", "rule"), **fields)


def events_on(alert: Alert) -> list[str]:
    return list(ProgressEvent.objects.filter(topic=f"alert:{alert.pk}").values_list("kind", flat=True))


def test_a_silent_stream_raises_then_resolves_when_it_speaks(db: None, t0: datetime) -> None:
    rule(kind=WatchRule.Kind.SILENT, pattern="stream:*", minutes=5)
    ProgressTopicFactory(topic="stream:7", started_at=t0, updated_at=t0, owner_id=None)
    ProgressTopicFactory(topic="stream:8", started_at=t0, updated_at=t0, ended_at=t0)  # ended: not silent
    ProgressTopicFactory(topic="job:9", started_at=t0, updated_at=t0)  # another pattern

    assert watchdog_sweep(now=minutes(t0, 4)) == {"raised": 0, "resolved": 0}
    assert watchdog_sweep(now=minutes(t0, 6)) == {"raised": 1, "resolved": 0}
    [alert] = alert_list_open()
    assert alert.topic == "stream:7"
    assert "no event for 6 min" in alert.message
    assert events_on(alert) == ["new"]
    assert watchdog_sweep(now=minutes(t0, 7)) == {"raised": 0, "resolved": 0}  # still open, not raised again

    progress_publish(topic="stream:7", kind="msg", text="alive")  # now: two hours after t0
    assert watchdog_sweep(now=timezone.now() + timedelta(minutes=1)) == {"raised": 0, "resolved": 1}
    alert.refresh_from_db()
    assert alert.resolved_at is not None
    assert list(alert_list_open()) == []
    assert events_on(alert) == ["new", "end"]


def test_an_offline_device_alerts_only_with_open_deliveries(db: None, t0: datetime) -> None:
    rule(kind=WatchRule.Kind.SILENT, pattern="pooldevice:*", minutes=10, only_if="open_deliveries")
    busy, idle = DeviceFactory(), DeviceFactory()
    delivery = DeliveryFactory(device=busy)
    for device in (busy, idle):
        ProgressTopicFactory(topic=f"pooldevice:{device.pk}", started_at=t0, updated_at=t0)
    watchdog_sweep(now=minutes(t0, 11))
    assert [a.topic for a in alert_list_open()] == [f"pooldevice:{busy.pk}"]
    Delivery.objects.filter(pk=delivery.pk).update(state="done")  # nothing waits for it any more
    assert watchdog_sweep(now=minutes(t0, 12)) == {"raised": 0, "resolved": 1}


def test_a_run_whose_percent_does_not_move_while_computing(db: None, t0: datetime) -> None:
    rule(kind=WatchRule.Kind.STALLED, pattern="run:*", minutes=10)
    topic = ProgressTopicFactory(topic="run:abc", state={"percentDone": 40, "numComputing": 3})
    ProgressTopicFactory(topic="run:idle", state={"percentDone": 40, "numComputing": 0})
    watchdog_sweep(now=t0)
    assert watchdog_sweep(now=minutes(t0, 9)) == {"raised": 0, "resolved": 0}
    assert watchdog_sweep(now=minutes(t0, 11)) == {"raised": 1, "resolved": 0}
    assert [a.topic for a in alert_list_open()] == ["run:abc"]
    ProgressTopic.objects.filter(pk=topic.pk).update(state={"percentDone": 41, "numComputing": 3})
    assert watchdog_sweep(now=minutes(t0, 12)) == {"raised": 0, "resolved": 1}
    # it stalls again, then its workers stop computing: resolved, nothing is running to stall
    assert watchdog_sweep(now=minutes(t0, 23)) == {"raised": 1, "resolved": 0}
    ProgressTopic.objects.filter(pk=topic.pk).update(state={"percentDone": 41, "numComputing": 0})
    assert watchdog_sweep(now=minutes(t0, 24)) == {"raised": 0, "resolved": 1}


def test_a_job_running_longer_than_n_minutes(db: None, t0: datetime) -> None:
    rule(kind=WatchRule.Kind.RUNNING, pattern="job:*", minutes=30)
    topic = ProgressTopicFactory(topic="job:5", name="csv_export", started_at=t0, updated_at=minutes(t0, 29))
    assert watchdog_sweep(now=minutes(t0, 29))["raised"] == 0
    assert watchdog_sweep(now=minutes(t0, 31))["raised"] == 1
    assert "running for 31 min" in alert_list_open()[0].message
    ProgressTopic.objects.filter(pk=topic.pk).update(ended_at=minutes(t0, 32))
    assert watchdog_sweep(now=minutes(t0, 33))["resolved"] == 1


def test_a_job_running_longer_than_its_types_p95(db: None, t0: datetime) -> None:
    watch = rule(kind=WatchRule.Kind.RUNNING_P95, pattern="job:*", minutes=1)
    for i in range(30):  # csv_export usually takes 60 to 89 s
        start = t0 + timedelta(minutes=i)
        ProgressTopicFactory(
            topic=f"job:{100 + i}",
            name="csv_export",
            started_at=start,
            updated_at=start + timedelta(seconds=60 + i),
            ended_at=start + timedelta(seconds=60 + i),
        )
    for i in range(5):  # too few runs of `rare` to know what is usual
        ProgressTopicFactory(topic=f"job:{200 + i}", name="rare", started_at=t0, updated_at=t0, ended_at=t0)
    WatchRule.objects.filter(pk=watch.pk).update(last_swept_at=t0 - timedelta(minutes=1))
    now = minutes(t0, 40)
    ProgressTopicFactory(topic="job:1", name="csv_export", started_at=now - timedelta(seconds=80), updated_at=now)
    ProgressTopicFactory(topic="job:2", name="csv_export", started_at=now - timedelta(seconds=300), updated_at=now)
    ProgressTopicFactory(topic="job:3", name="rare", started_at=now - timedelta(seconds=900), updated_at=now)
    assert watchdog_sweep(now=now)["raised"] == 1
    [alert] = alert_list_open()
    assert alert.topic == "job:2"
    assert "usually at most 1 min" in alert.message


def test_disabling_a_rule_resolves_its_alerts(db: None, t0: datetime) -> None:
    watch = rule(kind=WatchRule.Kind.SILENT, pattern="stream:*", minutes=1)
    ProgressTopicFactory(topic="stream:1", started_at=t0, updated_at=t0)
    watchdog_sweep(now=minutes(t0, 2))
    WatchRule.objects.filter(pk=watch.pk).update(enabled=False)
    assert watchdog_sweep(now=minutes(t0, 3)) == {"raised": 0, "resolved": 1}


def test_a_sweep_costs_the_same_queries_for_ten_or_three_hundred_topics(db: None, t0: datetime) -> None:
    rule(kind=WatchRule.Kind.SILENT, pattern="stream:*", minutes=5)
    rule(kind=WatchRule.Kind.RUNNING, pattern="job:*", minutes=5)
    rule(kind=WatchRule.Kind.STALLED, pattern="run:*", minutes=5)

    def steady_sweep_queries(count: int) -> int:
        for i in range(count):
            ProgressTopicFactory(topic=f"stream:{count}-{i}", started_at=t0, updated_at=t0)
            ProgressTopicFactory(topic=f"job:{count}{i}", started_at=t0, updated_at=t0)
            ProgressTopicFactory(topic=f"run:{count}-{i}", state={"percentDone": 1, "numComputing": 1})
        watchdog_sweep(now=minutes(t0, 1))
        watchdog_sweep(now=minutes(t0, 7))  # raises them all
        with CaptureQueriesContext(connection) as queries:
            watchdog_sweep(now=minutes(t0, 8))  # nothing changed: only the rules' reads
        return len(queries)

    few = steady_sweep_queries(10)
    ProgressTopic.objects.all().delete()
    many = steady_sweep_queries(300)
    assert many == few


def test_rules_are_edited_in_the_admin_and_alerts_listed(admin: User, db: None) -> None:
    staff = Client()
    staff.force_login(admin)
    add = reverse("admin:progress_watchrule_add")
    form = {"name": "quiet devices", "kind": "silent", "pattern": "pooldevice:*", "minutes": "15", "enabled": "on"}
    assert staff.post(add, {**form, "only_if": "open_deliveries"}).status_code == 302
    assert WatchRule.objects.get().only_if == "open_deliveries"
    refused = staff.post(add, {**form, "pattern": "*"})
    assert refused.status_code == 200 and "prefix ending" in refused.content.decode()
    refused = staff.post(add, {**form, "only_if": "phase_of_the_moon"})
    assert "Unknown condition" in refused.content.decode()
    assert staff.get(reverse("admin:progress_watchrule_changelist")).status_code == 200
    assert staff.get(reverse("admin:progress_alert_changelist") + "?open=yes").status_code == 200


def test_the_job_clusters_sweep_evaluates_the_rules_at_most_every_30_s(db: None, t0: datetime) -> None:
    from django.core.cache import cache

    from jobs.services import jobs_sweep
    from progress import watchdog

    cache.delete(watchdog._DUE_KEY)
    rule(kind=WatchRule.Kind.SILENT, pattern="stream:*", minutes=5)
    ProgressTopicFactory(topic="stream:1", started_at=t0, updated_at=t0)
    jobs_sweep()
    assert [a.topic for a in alert_list_open()] == ["stream:1"]
    ProgressTopicFactory(topic="stream:2", started_at=t0, updated_at=t0)
    jobs_sweep()  # a second cluster's pass within 30 s: not due yet
    assert len(alert_list_open()) == 1
    cache.delete(watchdog._DUE_KEY)
