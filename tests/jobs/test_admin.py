"""The staff admin: live job list and page, retry/cancel actions, submit form, files and download."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from django.test import Client

from jobs.models import Job, JobFile, JobSchedule
from jobs.services import job_claim, job_create, job_execute
from tests.factories import DEFAULT_PASSWORD

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client: Client, admin) -> Client:
    assert client.login(username=admin.email, password=DEFAULT_PASSWORD)
    return client


def test_job_list_has_live_progress_filters_and_search(staff: Client, user) -> None:
    job = job_create(type="test.main.add", data={"x": 1, "y": 2}, user=user)
    other = job_create(type="tests.fail", data={"message": "m"}, user=user)
    job_execute(job_id=other.pk)
    page = staff.get("/admin/jobs/job/")
    assert page.status_code == 200
    html = page.content.decode()
    assert f'data-progress-topic="job:{job.pk}"' in html and "progress/live.js" in html
    assert user.email in html and "Submit a job" in html
    failed = staff.get("/admin/jobs/job/?status__exact=failure").content.decode()
    assert f'data-progress-topic="job:{other.pk}"' in failed and f'data-progress-topic="job:{job.pk}"' not in failed
    found = staff.get(f"/admin/jobs/job/?q={user.email}").content.decode()
    assert f"job:{job.pk}" in found
    detail = staff.get(f"/admin/jobs/job/{other.pk}/change/").content.decode()
    assert 'id="job-live"' in detail and "RuntimeError: m" in detail and "Retry" in detail


def test_retry_and_cancel_actions(staff: Client, user, django_capture_on_commit_callbacks) -> None:
    failed = job_create(type="tests.fail", data={"message": "m"}, user=user)
    job_execute(job_id=failed.pk)
    fresh = job_create(type="test.main.add", data={"x": 1, "y": 2}, user=user)
    running = job_create(type="tests.sleep", data={"seconds": 1.0}, user=user)
    job_claim(job_id=running.pk, worker="w:1")
    with django_capture_on_commit_callbacks(execute=True):
        response = staff.post(
            "/admin/jobs/job/", {"action": "retry_jobs", "_selected_action": [failed.pk, fresh.pk]}, follow=True
        )
    bulk = Job.objects.get(type="admin.jobs_retry")
    text = response.content.decode()
    assert "2 jobs selected: they are being queued again in the background" in text
    assert f'href="/admin/jobs/job/{bulk.pk}/change/"' in text
    failed.refresh_from_db()
    assert failed.status == "failure"  # the page answered before the work was done ...
    with django_capture_on_commit_callbacks(execute=True):
        assert job_execute(job_id=bulk.pk) == "success"
    failed.refresh_from_db()
    bulk.refresh_from_db()
    assert failed.status == "fresh"  # ... and the job did it, with a summary and its progress
    assert bulk.result == {"selected": 2, "queued again": 1, "refused": 1, "gone": 0}
    assert bulk.progress == 100 and bulk.progress_message == "1 queued again, 1 refused, 0 gone"
    response = staff.post(
        "/admin/jobs/job/", {"action": "cancel_jobs", "_selected_action": [fresh.pk, running.pk]}, follow=True
    )
    assert job_execute(job_id=Job.objects.get(type="admin.jobs_cancel").pk) == "success"
    fresh.refresh_from_db()
    running.refresh_from_db()
    assert fresh.status == "failure" and running.status == "started" and running.cancel_requested
    # the job page's own buttons
    response = staff.post(f"/admin/jobs/job/{fresh.pk}/retry/", follow=True)
    fresh.refresh_from_db()
    assert fresh.status == "fresh"
    assert staff.get(f"/admin/jobs/job/{fresh.pk}/retry/").status_code == 404  # POST only


def test_submit_form_is_generated_from_the_signature(staff: Client, admin) -> None:
    chooser = staff.get("/admin/jobs/job/submit/").content.decode()
    assert "tests.kinds" in chooser and "test.main.myProtectedTask (protected)" in chooser
    form = staff.get("/admin/jobs/job/submit/?type=tests.kinds").content.decode()
    for name in ("n", "ratio", "label", "flag", "items", "mapping", "maybe", "mode", "colour", "point", "options"):
        assert f'name="{name}"' in form
    assert '<option value="fast">' in form and '<option value="red">' in form
    data = {
        "type": "tests.kinds",
        "n": "3",
        "ratio": "0.5",
        "label": "x",
        "flag": "on",
        "items": "[1, 2]",
        "mapping": '{"a": 1.5}',
        "maybe": "",
        "mode": "slow",
        "colour": "blue",
        "point": '{"x": 1}',
        "options": '{"name": "n", "size": 1}',
    }
    response = staff.post("/admin/jobs/job/submit/?type=tests.kinds", data)
    assert response.status_code == 302
    job = Job.objects.get(type="tests.kinds")
    assert job.created_by == admin
    assert job.data == {
        "n": 3,
        "ratio": 0.5,
        "label": "x",
        "flag": True,
        "items": [1, 2],
        "mapping": {"a": 1.5},
        "maybe": None,
        "mode": "slow",
        "colour": "blue",
        "point": {"x": 1},
        "options": {"name": "n", "size": 1},
    }
    job_execute(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == "success" and job.result["colour"] == "blue"
    bad = staff.post("/admin/jobs/job/submit/?type=tests.kinds", {**data, "point": '{"x": "one"}'})
    assert bad.status_code == 200 and "doesnt match the required type" in bad.content.decode()
    assert Job.objects.count() == 1


def test_files_admin_with_size_and_download(staff: Client, client: Client, user, export_root: Path) -> None:
    job = job_create(type="csv_export", data={"datasets": ["jobs"]}, user=user)
    job_execute(job_id=job.pk)
    row = JobFile.objects.get()
    listing = staff.get("/admin/jobs/jobfile/").content.decode()
    assert row.filename in listing and "bytes" in listing and f"/admin/jobs/jobfile/{row.pk}/download/" in listing
    download = staff.get(f"/admin/jobs/jobfile/{row.pk}/download/")
    assert download.status_code == 200
    assert b"".join(download.streaming_content) == (export_root / row.filename).read_bytes()
    assert staff.get("/admin/django_q/ormq/").status_code == 200  # django-q2's admin stays available


def test_admin_dashboard_cards(staff: Client, user) -> None:
    job_create(type="test.main.add", data={"x": 1, "y": 2}, user=user)
    index = staff.get("/admin/").content.decode()
    assert "Jobs running" in index and "1 waiting" in index


def test_attempts_are_kept_across_retries_with_their_errors(
    staff: Client, user, django_capture_on_commit_callbacks
) -> None:
    from django.contrib.admin.models import LogEntry

    job = job_create(type="tests.fail", data={"message": "first boom"}, user=user)
    job_execute(job_id=job.pk)
    with django_capture_on_commit_callbacks(execute=False):
        staff.post(f"/admin/jobs/job/{job.pk}/retry/")
    Job.objects.filter(pk=job.pk).update(data={"message": "second boom"})
    job_execute(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == "failure" and job.error == "RuntimeError: second boom"
    history = list(job.attempt_history.values_list("outcome", "error"))
    assert history == [("failure", "RuntimeError: first boom"), ("failure", "RuntimeError: second boom")]
    page = staff.get(f"/admin/jobs/job/{job.pk}/change/").content.decode()
    rows = page.split('class="job-attempt"')[1:]
    assert len(rows) == 2 and "first boom" in rows[0] and "second boom" in rows[1]
    assert '<pre class="job-traceback">Traceback' in page  # monospaced
    # the admin History page lists the retry
    assert list(LogEntry.objects.filter(object_id=str(job.pk)).values_list("change_message", flat=True)) == ["Retried"]
    assert "Retried" in staff.get(f"/admin/jobs/job/{job.pk}/history/").content.decode()


def test_a_cancelled_job_says_cancelled_and_shows_one_state(staff: Client, user) -> None:
    from django.contrib.admin.models import LogEntry

    from jobs.services import job_finish, job_report_progress

    job = job_create(type="tests.sleep", data={"seconds": 1.0}, user=user)
    job_claim(job_id=job.pk, worker="w:1")
    job_report_progress(job_id=job.pk, worker="w:1", percent=60, message="more than half")
    staff.post(f"/admin/jobs/job/{job.pk}/cancel/")
    assert job_report_progress(job_id=job.pk, worker="w:1", percent=70, message="going on") is True
    job_finish(job_id=job.pk, worker="w:1", ok=False, error="Cancelled.", retryable=False)
    job.refresh_from_db()
    assert job.status == "failure"  # the seeds' wire status
    page = staff.get(f"/admin/jobs/job/{job.pk}/change/").content.decode()
    live = page.split('id="job-live"')[1].split("</form>\n    </div>")[0]
    assert 'data-state="cancelled"' in page and ">cancelled</span>" in page
    assert "Started" not in page.split("<h2>")[1].split("</h2>")[0]  # the subtitle holds no state
    assert 'name="cancel" disabled' in live and 'name="retry" disabled' not in live
    # the bar stays where the job stopped; the end event says so too
    assert '<progress max="100" value="70.0"' in page
    from progress.models import ProgressEvent

    end = ProgressEvent.objects.filter(topic=job.topic, kind="end").get()
    assert end.state["percent"] == 70.0 and end.state["label"] == "cancelled"
    assert job.attempt_history.get().outcome == "cancelled"
    assert list(LogEntry.objects.filter(object_id=str(job.pk)).values_list("change_message", flat=True)) == [
        "Cancelled"
    ]
    listing = staff.get("/admin/jobs/job/").content.decode()
    assert 'data-state="cancelled" data-progress-field="label" data-progress-state="label">cancelled</span>' in listing


def test_jobs_with_a_stale_heartbeat_have_a_filter_and_a_count(staff: Client, user, settings) -> None:
    import re
    from datetime import timedelta

    from django.core.cache import cache
    from django.utils import timezone

    from jobs import conf

    settings.JOBS_STALE_SECONDS = 30
    silent = job_create(type="tests.sleep", data={"seconds": 1}, user=user)
    beating = job_create(type="tests.sleep", data={"seconds": 1}, user=user)
    for job in (silent, beating):
        job_claim(job_id=job.pk, worker="w:1")
    Job.objects.filter(pk=silent.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=5))
    cache.delete(conf.SWEEP_SEEN_KEY)
    index = staff.get("/admin/").content.decode()
    cards = {
        title: value
        for value, title in re.findall(r'<div class="value"[^>]*>([^<]+)</div>\s*<div>([^<]+)</div>', index)
    }
    assert cards["Jobs with a stale heartbeat"] == "1" and cards["Job recovery sweep"] == "never ran"
    stale = staff.get("/admin/jobs/job/?stuck=stale").content.decode()
    assert f"job:{silent.pk}" in stale and f"job:{beating.pk}" not in stale
    cache.set(conf.SWEEP_SEEN_KEY, time.time() - 7)
    index = staff.get("/admin/").content.decode()
    assert re.search(r'<div class="value"[^>]*>\d+ s ago</div>\s*<div>Job recovery sweep</div>', index)


def test_job_list_shows_each_queues_waiting_and_running_count(staff: Client, user) -> None:
    job_create(type="csv_export", data={}, user=user)
    running = job_create(type="test.main.add", data={"x": 1, "y": 2}, user=user)
    job_create(type="test.main.add", data={"x": 1, "y": 2}, user=user)
    job_claim(job_id=running.pk, worker="w:1")
    html = staff.get("/admin/jobs/job/").content.decode()
    assert '<a href="?queue=default">default</a></td><td>1</td><td>1</td>' in html
    assert '<a href="?queue=exports">exports</a></td><td>1</td><td>0</td>' in html
    only = staff.get("/admin/jobs/job/?queue=exports").content.decode()
    assert f"job:{running.pk}" not in only


def test_a_schedule_is_added_and_edited_with_the_generated_job_form(staff: Client, admin, user) -> None:
    from jobs.models import JobSchedule
    from jobs.schedules import schedules_fire_due

    chooser = staff.get("/admin/jobs/jobschedule/add/").content.decode()
    assert 'value="test.main.add"' in chooser
    form = staff.get("/admin/jobs/jobschedule/add/?type=test.main.add").content.decode()
    assert 'name="x"' in form and 'name="schedule_cron"' in form and "Save schedule" in form
    fields = {
        "type": "test.main.add",
        "x": "1",
        "y": "2",
        "schedule_timezone": "Europe/Paris",
        "schedule_missed": "skip",
    }
    refused = staff.post("/admin/jobs/jobschedule/add/?type=test.main.add", {**fields, "schedule_cron": "often"})
    assert refused.status_code == 200 and "cron must be a 5-field expression" in refused.content.decode()
    saved = staff.post(
        "/admin/jobs/jobschedule/add/?type=test.main.add",
        {**fields, "schedule_cron": "59 23 * * *", "schedule_enabled": "on"},
    )
    schedule = JobSchedule.objects.get()
    assert saved.status_code == 302 and (schedule.owner, schedule.data, schedule.cron) == (
        admin,
        {"x": 1, "y": 2},
        "59 23 * * *",
    )
    JobSchedule.objects.filter(pk=schedule.pk).update(next_run_at=schedule.next_run_at.replace(year=2000))
    schedule.refresh_from_db()
    schedules_fire_due(now=schedule.next_run_at)
    page = staff.get(f"/admin/jobs/jobschedule/{schedule.pk}/change/").content.decode()
    assert "Next runs" in page and "Last runs" in page and "/admin/jobs/job/" in page
    edited = staff.post(
        f"/admin/jobs/jobschedule/{schedule.pk}/change/",
        {**fields, "x": "5", "schedule_interval_seconds": "60", "schedule_enabled": "on"},
    )
    schedule.refresh_from_db()
    assert edited.status_code == 302 and (schedule.data["x"], schedule.cron, schedule.interval_seconds) == (5, "", 60)
    listing = staff.get("/admin/jobs/jobschedule/").content.decode()
    assert "every 60 s" in listing
    staff.post("/admin/jobs/jobschedule/", {"action": "pause", "_selected_action": [schedule.pk]})
    schedule.refresh_from_db()
    assert not schedule.enabled


@pytest.mark.parametrize(
    "hostile",
    ["9" * 5000, "[" * 5000 + "]" * 5000, '"\\ud800"', '{"a": NaN}', "[1e999]"],
    ids=["5000-digit number", "nested 5000 deep", "lone surrogate", "NaN", "1e999"],
)
def test_the_generated_forms_refuse_json_the_api_refuses_instead_of_a_500(staff: Client, hostile: str) -> None:
    data = {"type": "tests.kinds", "n": "3", "ratio": "0.5", "label": "x", "mode": "slow", "colour": "blue"}
    data |= {"items": hostile, "mapping": "{}", "point": '{"x": 1}', "options": '{"name": "n", "size": 1}'}
    submitted = staff.post("/admin/jobs/job/submit/?type=tests.kinds", data)
    assert submitted.status_code == 200 and "Not JSON this platform accepts" in submitted.content.decode()
    when = {"schedule_interval_seconds": "60", "schedule_timezone": "UTC", "schedule_missed": "skip"}
    scheduled = staff.post("/admin/jobs/jobschedule/add/?type=tests.kinds", {**data, **when})
    assert scheduled.status_code == 200 and "Not JSON this platform accepts" in scheduled.content.decode()
    assert not Job.objects.filter(type="tests.kinds").exists()
    assert not JobSchedule.objects.exists()
