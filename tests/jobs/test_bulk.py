"""Admin bulk actions as background jobs: the page answers at once, the job does the work."""

from __future__ import annotations

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from django.test import Client

from coordinator.models import Role
from jobs.models import Job
from jobs.services import job_execute
from tests.factories import JobFactory, UserFactory

pytestmark = pytest.mark.django_db


def _operator(*codenames: str):
    user = UserFactory(role=Role.USER, is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return user


def test_retrying_250_jobs_answers_at_once_and_the_job_retries_them_all(django_capture_on_commit_callbacks) -> None:
    operator = _operator("view_job", "change_job")
    failed = JobFactory.create_batch(250, status="failure", error="boom", type="tests.fail")
    client = Client()
    client.force_login(operator)
    with django_capture_on_commit_callbacks(execute=False):
        answer = client.post(
            "/admin/jobs/job/", {"action": "retry_jobs", "_selected_action": [job.pk for job in failed]}
        )
    assert answer.status_code == 302
    assert Job.objects.filter(pk__in=[j.pk for j in failed], status="failure").count() == 250  # not yet
    bulk = Job.objects.get(type="admin.jobs_retry")
    assert bulk.created_by == operator and len(bulk.data["ids"]) == 250
    with django_capture_on_commit_callbacks(execute=False):
        assert job_execute(job_id=bulk.pk) == "success"
    assert Job.objects.filter(pk__in=[j.pk for j in failed], status="fresh").count() == 250
    bulk.refresh_from_db()
    assert bulk.result["queued again"] == 250 and bulk.progress == 100
    assert LogEntry.objects.filter(user=operator, change_message="Retried").count() == 250


def test_a_user_without_the_permission_cannot_submit_a_bulk_job_through_the_api(user, client_for) -> None:
    victim = JobFactory(status="failure", error="boom")
    answer = client_for(user).post(
        "/v1/tasks", {"type": "admin.jobs_retry", "data": {"ids": [victim.pk]}}, format="json"
    )
    assert answer.status_code == 403
    assert not Job.objects.filter(type="admin.jobs_retry").exists()


def test_a_bulk_job_rechecks_the_permission_when_it_runs() -> None:
    operator = _operator("view_job", "change_job")
    victim = JobFactory(status="failure", error="boom")
    client = Client()
    client.force_login(operator)
    client.post("/admin/jobs/job/", {"action": "retry_jobs", "_selected_action": [victim.pk]})
    operator.user_permissions.clear()  # lost the right before a worker took the job
    bulk = Job.objects.get(type="admin.jobs_retry")
    assert job_execute(job_id=bulk.pk) == "failure"
    bulk.refresh_from_db()
    victim.refresh_from_db()
    assert "PermissionError" in bulk.error and victim.status == "failure"


def test_a_viewer_cannot_run_the_bulk_action() -> None:
    viewer = _operator("view_job")
    victim = JobFactory(status="failure", error="boom")
    client = Client()
    client.force_login(viewer)
    client.post("/admin/jobs/job/", {"action": "retry_jobs", "_selected_action": [victim.pk]})
    assert not Job.objects.filter(type="admin.jobs_retry").exists()


def test_forged_empty_and_oversized_selections_start_no_job(admin, monkeypatch) -> None:
    from jobs import bulk

    client = Client(raise_request_exception=False)
    client.force_login(admin)
    for forged in (["abc"], ["1e5"], ["9" * 40]):
        answer = client.post("/admin/jobs/job/", {"action": "retry_jobs", "_selected_action": forged}, follow=True)
        assert answer.status_code == 200 and "The selection names no valid row." in answer.content.decode()
    answer = client.post(
        "/admin/jobs/job/?status__exact=success",
        {"action": "retry_jobs", "select_across": "1", "_selected_action": ["1"]},
        follow=True,
    )
    assert "Nothing matched the selection: no job was started." in answer.content.decode()
    monkeypatch.setattr(bulk, "MAX_ROWS", 3)
    failed = JobFactory.create_batch(4, status="failure", error="boom")
    answer = client.post(
        "/admin/jobs/job/", {"action": "retry_jobs", "_selected_action": [job.pk for job in failed]}, follow=True
    )
    assert "More than 3 rows selected" in answer.content.decode()
    assert not Job.objects.filter(type__startswith="admin.").exists()


def test_a_bulk_job_reads_its_rows_in_chunks(monkeypatch) -> None:
    from jobs import bulk

    monkeypatch.setattr(bulk, "CHUNK", 7)
    operator = _operator("view_job", "change_job")
    failed = JobFactory.create_batch(30, status="failure", error="boom")
    client = Client()
    client.force_login(operator)
    client.post("/admin/jobs/job/", {"action": "retry_jobs", "_selected_action": [job.pk for job in failed]})
    bulk_job = Job.objects.get(type="admin.jobs_retry")
    assert job_execute(job_id=bulk_job.pk) == "success"
    bulk_job.refresh_from_db()
    assert bulk_job.result == {"selected": 30, "queued again": 30, "refused": 0, "gone": 0}
