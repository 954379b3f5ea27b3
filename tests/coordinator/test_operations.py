"""The operations dashboard: the minute values recorded through each app, their retention and
live hand-off, the admin index's panels, and a real browser following a job live."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

import tests.jobs.sample_jobs  # noqa: F401 - registers the test job functions
from coordinator.models import MetricMinute, User
from coordinator.services import operations_overview_publish, operations_record
from farm.services import run_create, tasks_claim, tasks_complete, worker_register
from jobs.models import Job
from jobs.services import job_create, job_execute
from pool.services import device_create, heartbeat_record, response_create, task_create
from progress.models import ProgressEvent
from tests.progress.conftest import admin_login, serve_platform, wait_until


def values_at(minute: Any) -> dict[str, float]:
    return dict(MetricMinute.objects.filter(minute=int(minute.timestamp())).values_list("series", "value"))


def floor_minute(moment: Any) -> Any:
    return moment.replace(second=0, microsecond=0)


def epoch(moment: Any) -> int:
    return int(moment.timestamp())


def test_each_minute_counts_what_each_app_did(
    admin: User, master: User, django_capture_on_commit_callbacks: Any
) -> None:
    first = timezone.now()
    operations_record(now=first)  # the farm's running total before the work
    ok = job_create(type="tests.record", data={"path": "/dev/null"}, user=admin)
    bad = job_create(type="tests.fail", data={"message": "boom"}, user=admin)
    job_create(type="tests.sleep", data={"seconds": 1}, user=admin)  # waits
    assert job_execute(job_id=ok.pk) == "success"
    assert job_execute(job_id=bad.pk) == "failure"
    run = run_create(owner=admin, num_tasks=5)
    worker = worker_register(owner=admin, uuid=uuid.uuid4().hex, hostname="h", pid=1)
    taken = tasks_claim(run=run, worker=worker, limit=3)
    tasks_complete(run=run, worker=worker, numbers=[t.task for t in taken[:2]])
    device, _ = device_create(name="d", validated=True)
    heartbeat_record(device=device)
    task = task_create(user=master, to=f"device:{device.pk}", title="t")
    response_create(device=device, parent_id=task.msg_id, status="done")
    events = ProgressEvent.objects.filter(created_at__gte=floor_minute(first)).count()

    with django_capture_on_commit_callbacks(execute=True):
        stored = operations_record(now=first + timedelta(minutes=1))

    recorded = values_at(floor_minute(first))
    assert stored == len(recorded)
    assert recorded["jobs.succeeded"] == 1 and recorded["jobs.failed"] == 1
    assert recorded["jobs.waiting"] == 1 and recorded["jobs.running"] == 0
    assert recorded["jobs.run_mean"] >= 0 and recorded["jobs.run_p95"] >= recorded["jobs.run_mean"] - 1e-9
    assert recorded["farm.done"] == 2 and recorded["farm.computing"] == 1 and recorded["farm.workers"] == 1
    assert recorded["pool.responses"] == 1 and recorded["pool.heartbeats"] == 1 and recorded["pool.online"] == 1
    assert recorded["pool.open"] == 0
    # Every event stored since the minute began, the minute's own broadcast not yet among them.
    assert recorded["progress.events"] == events
    # The values went out on the live channel, to admins only.
    broadcast = ProgressEvent.objects.filter(topic="ops:dashboard").latest("id")
    assert broadcast.owner_id is None and broadcast.state["jobs.succeeded"] == 1
    assert broadcast.state["minute"] == epoch(floor_minute(first))
    # With the counts and needs-attention items of now, as the index shows them.
    overview = broadcast.state["overview"]
    assert overview["cards"]["jobs.jobs-failed"] == {"value": "1", "note": "1 succeeded"}
    assert overview["cards"]["farm.farm-tasks-computing"]["value"] == "1"
    assert {
        "title": "Job attempts failed in the last hour",
        "count": 1,
        "url": "/admin/jobs/job/?status__exact=failure",
    } in (overview["attention"]["jobs"])


def test_minutes_past_the_retention_are_pruned_and_a_minute_recorded_twice_is_replaced(db: None, settings: Any) -> None:
    settings.OPERATIONS_RETENTION_HOURS = 25
    now = timezone.now()
    old = epoch(floor_minute(now) - timedelta(hours=26))
    kept = epoch(floor_minute(now) - timedelta(hours=2))
    MetricMinute.objects.create(series="jobs.succeeded", minute=old, value=3)
    MetricMinute.objects.create(series="jobs.succeeded", minute=kept, value=4)
    operations_record(now=now)
    operations_record(now=now)
    assert not MetricMinute.objects.filter(minute=old).exists()
    assert MetricMinute.objects.filter(series="jobs.succeeded", minute=kept).exists()
    last = epoch(floor_minute(now) - timedelta(minutes=1))
    assert MetricMinute.objects.filter(series="jobs.succeeded", minute=last).count() == 1


def test_index_is_the_operations_overview(admin: User, django_assert_max_num_queries: Any) -> None:
    stale = job_create(type="tests.record", data={"path": "/dev/null"}, user=admin)
    Job.objects.filter(pk=stale.pk).update(
        status=Job.Status.STARTED, worker="gone", heartbeat_at=timezone.now() - timedelta(hours=1)
    )
    minute = epoch(floor_minute(timezone.now()) - timedelta(minutes=5))
    MetricMinute.objects.create(series="jobs.succeeded", minute=minute, value=7)
    # Three hours ago, two minutes of one 5-minute bucket: the day's chart shows their mean.
    bucket = epoch(floor_minute(timezone.now()) - timedelta(hours=3)) // 300 * 300
    MetricMinute.objects.create(series="jobs.succeeded", minute=bucket, value=2)
    MetricMinute.objects.create(series="jobs.succeeded", minute=bucket + 60, value=4)
    client = Client()
    client.force_login(admin)
    with django_assert_max_num_queries(60):
        page = client.get("/admin/")
    assert page.status_code == 200
    html = page.content.decode()
    for panel in ("panel-jobs", "panel-farm", "panel-pool", "panel-progress"):
        assert f'id="{panel}"' in html
    # Needs attention: the stale job, with the filtered list behind the number.
    assert (
        "Jobs with a stale heartbeat</a>" in html and 'href="/admin/jobs/job/?stuck=stale"><strong>1</strong>' in html
    )
    # Counts that follow the live channel, and the chart data the page draws.
    assert 'data-progress-topic="ops:dashboard"' in html and 'data-ops-card="jobs.jobs-running">1<' in html
    data = json.loads(html.split('<script id="ops-data" type="application/json">')[1].split("</script>")[0])
    assert data["hour"]["jobs.succeeded"] == [[minute, 7.0, 1]]
    assert data["day"]["jobs.succeeded"] == [[bucket, 3.0, 2], [minute // 300 * 300, 7.0, 1]]
    assert {"name": "jobs.succeeded", "label": "succeeded"} in data["charts"]["chart-jobs-0"]
    assert "coordinator/vendor/uplot/uPlot.iife.min.js" in html and "progress/live.js" in html
    assert "cdn" not in html.lower()


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_dashboard_follows_a_running_job_live(socket_dir: Any, browser: Any, admin: User) -> None:
    with serve_platform(socket_dir, qcluster=True, JOBS_EXTRA_MODULES="tests.jobs.sample_jobs") as base:
        page = browser.new_page()
        admin_login(page, base, admin)
        page.wait_for_selector("html[data-progress-live=connected]")
        page.wait_for_selector("#chart-jobs-0 canvas")  # uPlot drew the chart
        running = page.locator('[data-ops-card="jobs.jobs-running"]')
        assert running.inner_text() == "0"
        ended = page.locator("#chart-jobs-0")
        assert float(ended.get_attribute("data-total") or "0") == 0
        page.evaluate("window.notReloaded = true")

        job = job_create(type="tests.sleep", data={"seconds": 8}, user=admin)
        for _ in range(600):
            if Job.objects.get(pk=job.pk).status == Job.Status.STARTED:
                break
            page.wait_for_timeout(50)
        operations_record()  # the minute job, with the clock where the test wants it
        wait_until(page, "() => document.querySelector('[data-ops-card=\"jobs.jobs-running\"]').textContent === '1'")

        for _ in range(1200):
            job.refresh_from_db()
            if job.status == Job.Status.SUCCESS:
                break
            page.wait_for_timeout(50)
        assert job.status == Job.Status.SUCCESS and job.finished_at is not None
        operations_record(now=job.finished_at + timedelta(minutes=1))  # the minute it ended in
        wait_until(page, "() => Number(document.getElementById('chart-jobs-0').dataset.total) >= 1")
        wait_until(page, "() => document.querySelector('[data-ops-card=\"jobs.jobs-running\"]').textContent === '0'")
        assert page.evaluate("window.notReloaded") is True
        page.click("button[data-range='86400']")
        # The day's chart draws 5-minute means per minute: the job's minute may share its bucket
        # with the quiet minute recorded while it ran, so the day shows it as more than nothing.
        assert float(ended.get_attribute("data-total") or "0") > 0


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_counts_and_attention_follow_a_failing_job_live_for_staff_who_may_only_view(
    socket_dir: Any, browser: Any
) -> None:
    from django.contrib.auth.models import Permission

    from coordinator.models import Role
    from tests.factories import UserFactory

    viewer = UserFactory(role=Role.USER, is_staff=True)
    viewer.user_permissions.set(Permission.objects.filter(codename__startswith="view_"))
    env = {"JOBS_EXTRA_MODULES": "tests.jobs.sample_jobs", "OPERATIONS_LIVE_SECONDS": "1"}
    with serve_platform(socket_dir, qcluster=True, **env) as base:
        page = browser.new_page()
        admin_login(page, base, viewer)
        page.wait_for_selector("html[data-progress-live=connected]")
        failed = page.locator('[data-ops-card="jobs.jobs-failed"]')
        attention = page.locator('[data-ops-attention="jobs"]')
        assert failed.inner_text() == "0" and attention.is_hidden()
        page.evaluate("window.notReloaded = true")

        # Nobody records a minute here: the open page's overview follows by itself.
        job = job_create(type="tests.fail", data={"message": "boom"}, user=viewer)
        wait_until(page, "() => document.querySelector('[data-ops-card=\"jobs.jobs-failed\"]').textContent === '1'")
        wait_until(page, "() => !document.querySelector('[data-ops-attention=\"jobs\"]').hidden")
        assert Job.objects.get(pk=job.pk).status == Job.Status.FAILURE
        assert "1 Job attempts failed in the last hour" in attention.inner_text()
        assert attention.locator("a").first.get_attribute("href") == "/admin/jobs/job/?status__exact=failure"
        assert page.evaluate("window.notReloaded") is True


def test_the_live_overview_carries_what_the_index_renders(admin: User, django_capture_on_commit_callbacks: Any) -> None:
    failed = job_create(type="tests.fail", data={"message": "boom"}, user=admin)
    assert job_execute(job_id=failed.pk) == "failure"
    client = Client()
    client.force_login(admin)
    html = client.get("/admin/").content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        assert operations_overview_publish() is True
    overview = ProgressEvent.objects.filter(topic="ops:dashboard").latest("id").state["overview"]
    for key, card in overview["cards"].items():
        assert f'data-ops-card="{key}">{card["value"]}<' in html
    attention = [(panel, item) for panel, items in overview["attention"].items() for item in items]
    assert (
        "jobs",
        {"title": "Job attempts failed in the last hour", "count": 1, "url": "/admin/jobs/job/?status__exact=failure"},
    ) in attention
    for _, item in attention:
        assert f'<a href="{item["url"]}"><strong>{item["count"]}</strong> {item["title"]}</a>' in html
    # A panel with nothing to attend to keeps an empty, hidden list the live channel can fill.
    assert 'data-ops-attention="pool" hidden>' in html


def test_staff_who_may_only_view_see_the_dashboard(admin: User) -> None:
    from django.contrib.auth.models import Permission

    from coordinator.models import Role
    from tests.factories import UserFactory

    viewer = UserFactory(role=Role.USER, is_staff=True)
    viewer.user_permissions.set(Permission.objects.filter(codename__startswith="view_"))
    client = Client()
    client.force_login(viewer)
    html = client.get("/admin/").content.decode()
    assert 'id="panel-jobs"' in html and 'data-progress-topic="ops:dashboard"' in html
    assert "progress.live-progress" not in html  # the Live page's card is the admins'


def test_open_watchdog_alerts_need_attention_and_resolved_ones_do_not(admin: User) -> None:
    from progress.models import Alert

    Alert.objects.create(key="rule:1:stream:7", topic="stream:7", message="stream:7 silent", raised_at=timezone.now())
    Alert.objects.create(
        key="rule:1:stream:8",
        topic="stream:8",
        message="stream:8 silent",
        raised_at=timezone.now() - timedelta(hours=1),
        resolved_at=timezone.now(),
    )
    client = Client()
    client.force_login(admin)
    html = client.get("/admin/").content.decode()
    assert 'href="/admin/progress/alert/?open=yes"><strong>1</strong> Open watchdog alerts</a>' in html
