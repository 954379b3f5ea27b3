"""Retention: the prune deletes finished jobs and old files in bounded batches, never a file
whose download is running; the admin says how long things are kept and when a job goes."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.core.cache import cache
from django.test import Client
from django.utils import timezone

from coordinator.models import User
from jobs.models import Job, JobAttempt, JobFile
from jobs.retention import file_open_for_download, job_prune_at, jobs_prune, jobs_prune_if_due
from jobs.services import job_create, job_execute
from tests.factories import DEFAULT_PASSWORD

pytestmark = pytest.mark.django_db

DAY = timedelta(days=1)


def _finished(user: User, *, age: timedelta, count: int = 1) -> list[int]:
    ids = []
    for _ in range(count):
        job = job_create(type="test.main.add", data={"x": 1, "y": 1}, user=user)
        job_execute(job_id=job.pk)
        Job.objects.filter(pk=job.pk).update(finished_at=timezone.now() - age)
        ids.append(job.pk)
    return ids


def test_finished_jobs_past_retention_are_pruned_in_bounded_batches(user: User, settings) -> None:
    settings.JOBS_KEEP_DAYS = 30
    old = _finished(user, age=31 * DAY, count=25)
    recent = _finished(user, age=29 * DAY, count=2)
    waiting = job_create(type="test.main.add", data={"x": 1, "y": 1}, user=user)
    Job.objects.filter(pk=waiting.pk).update(created_at=timezone.now() - 60 * DAY)
    assert jobs_prune(batch=10, max_batches=2) == {"jobs": 20, "files": 0}  # one call stops at its bound
    assert Job.objects.filter(pk__in=old).count() == 5
    assert jobs_prune(batch=10, max_batches=2)["jobs"] == 5
    assert set(Job.objects.values_list("pk", flat=True)) == {*recent, waiting.pk}
    assert not JobAttempt.objects.filter(job_id__in=old).exists()


def _old_file(user: User, root: Path, name: str) -> JobFile:
    (root / name).write_text("id\n1\n")
    row = JobFile.objects.create(filename=name, owner=user, format="csv", size=5)
    JobFile.objects.filter(pk=row.pk).update(created_at=timezone.now() - 8 * DAY)
    row.refresh_from_db()
    return row


def test_a_file_being_downloaded_is_never_pruned(user: User, export_root: Path, client_for) -> None:
    row = _old_file(user, export_root, "export_260101_aaaaaaaa.csv")
    handle = file_open_for_download(row)
    assert jobs_prune()["files"] == 0  # the download holds it
    assert handle.read() == b"id\n1\n" and (export_root / row.filename).exists()
    handle.close()  # the response ended: the lease is released
    assert jobs_prune()["files"] == 1
    assert not (export_root / row.filename).exists() and not JobFile.objects.exists()


def test_a_download_over_http_holds_the_file_until_its_response_closes(user: User, export_root: Path, client_for):
    row = _old_file(user, export_root, "export_260101_bbbbbbbb.csv")
    response = client_for(user).get(f"/v1/files/{row.filename}")
    assert response.status_code == 200
    assert JobFile.objects.get(pk=row.pk).downloading_until is not None
    assert jobs_prune()["files"] == 0
    # Reading it to the end closes the response, as a WSGI server does.
    assert b"".join(response.streaming_content) == b"id\n1\n"
    assert JobFile.objects.get(pk=row.pk).downloading_until is None
    assert jobs_prune()["files"] == 1


def test_the_prune_runs_once_an_hour_across_clusters(user: User) -> None:
    cache.delete("jobs:prune")
    _finished(user, age=40 * DAY)
    assert jobs_prune_if_due() == {"jobs": 1, "files": 0}
    _finished(user, age=40 * DAY)
    assert jobs_prune_if_due() is None  # another cluster (or this one) pruned within the hour
    cache.delete("jobs:prune")


def test_the_admin_shows_the_retention_and_when_a_job_is_pruned(client: Client, admin, user, settings) -> None:
    settings.JOBS_KEEP_DAYS = 30
    (job_id,) = _finished(user, age=DAY)
    job = Job.objects.get(pk=job_id)
    assert job_prune_at(job) == job.finished_at + 30 * DAY
    assert client.login(username=admin.email, password=DEFAULT_PASSWORD)
    listing = client.get("/admin/jobs/job/").content.decode()
    assert "Finished jobs are kept 30 days, export and upload files 7 days" in listing
    page = client.get(f"/admin/jobs/job/{job_id}/change/").content.decode()
    assert f"{job_prune_at(job):%Y-%m-%d %H:%M} UTC" in page
    fresh = job_create(type="test.main.add", data={"x": 1, "y": 1}, user=user)
    assert "kept while it waits or runs" in client.get(f"/admin/jobs/job/{fresh.pk}/change/").content.decode()
