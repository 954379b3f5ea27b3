"""Retention: finished jobs and files are kept `JOBS_KEEP_DAYS` / `JOBS_FILES_KEEP_DAYS`, then the
prune deletes them in bounded batches; a file being downloaded is never deleted (a lease)."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.core.cache import cache
from django.db.models import Q
from django.utils import timezone

from jobs import conf
from jobs.exports import file_path
from jobs.models import Job, JobFile

logger = logging.getLogger("jobs")

# Rows deleted per statement, and statements per prune call: one call never holds the database
# long; the next one (an hour later, or `manage.py jobs_prune` again) goes on.
PRUNE_BATCH = 1000
PRUNE_MAX_BATCHES = 20
PRUNE_EVERY_SECONDS = 3600
PRUNE_LOCK_KEY = "jobs:prune"
# How long a download holds its file before the lease lapses (a download that outlives it, or a
# crashed one, no longer protects the file).
DOWNLOAD_LEASE = timedelta(hours=6)


class _LeasedFile(io.BufferedReader):
    """A download's file: closing it (the response finished, or was cut off) ends the lease."""

    def __init__(self, raw: io.FileIO, on_close: Callable[[], None]) -> None:
        super().__init__(raw)
        self._on_close: Callable[[], None] | None = on_close

    def close(self) -> None:
        try:
            super().close()
        finally:
            done, self._on_close = self._on_close, None
            if done is not None:
                done()


def file_open_for_download(row: JobFile) -> io.BufferedReader:
    """Open a file for a download and hold it against the prune until the response is closed."""
    handle = io.FileIO(file_path(row), "rb")  # OSError when the file is gone
    JobFile.objects.filter(pk=row.pk).update(downloading_until=timezone.now() + DOWNLOAD_LEASE)

    def release() -> None:
        with contextlib.suppress(Exception):  # a closed response must never fail on this
            JobFile.objects.filter(pk=row.pk).update(downloading_until=None)

    return _LeasedFile(handle, release)


def job_prune_at(job: Job) -> datetime | None:
    """When the prune will delete this job (None while it waits or runs)."""
    if job.status in (Job.Status.FRESH, Job.Status.STARTED):
        return None
    finished = job.finished_at or job.updated_on or job.created_at
    return finished + timedelta(days=conf.keep_days())


def _batches(ids_of: Callable[[], list[int]], delete: Callable[[list[int]], int], limit: int) -> int:
    deleted = 0
    for _ in range(limit):
        ids = ids_of()
        if not ids:
            break
        deleted += delete(ids)
    return deleted


def jobs_prune(
    *, now: datetime | None = None, batch: int = PRUNE_BATCH, max_batches: int = PRUNE_MAX_BATCHES
) -> dict[str, int]:
    """Delete finished jobs and files past their retention, at most `max_batches` of `batch` each."""
    now = now or timezone.now()
    job_cutoff = now - timedelta(days=conf.keep_days())
    old_jobs = Job.objects.filter(status__in=[Job.Status.SUCCESS, Job.Status.FAILURE]).filter(
        Q(finished_at__lt=job_cutoff) | Q(finished_at__isnull=True, created_at__lt=job_cutoff)
    )
    jobs = _batches(
        lambda: list(old_jobs.order_by("pk").values_list("pk", flat=True)[:batch]),
        lambda ids: Job.objects.filter(pk__in=ids).delete()[1].get("jobs.Job", 0),
        max_batches,
    )
    file_cutoff = now - timedelta(days=conf.files_keep_days())
    old_files = JobFile.objects.filter(created_at__lt=file_cutoff).exclude(downloading_until__gt=now)
    files = _batches(
        lambda: list(old_files.order_by("pk").values_list("pk", flat=True)[:batch]), _files_delete, max_batches
    )
    return {"jobs": jobs, "files": files}


def _files_delete(ids: list[int]) -> int:
    deleted = 0
    now = timezone.now()
    for row in JobFile.objects.filter(pk__in=ids):
        # The guarded delete: a download that started since the batch was read keeps its file.
        if JobFile.objects.filter(pk=row.pk).exclude(downloading_until__gt=now).delete()[0]:
            with contextlib.suppress(FileNotFoundError, OSError):
                file_path(row).unlink()
            deleted += 1
    return deleted


def jobs_prune_if_due() -> dict[str, int] | None:
    """Run the prune if no cluster ran it in the last hour (called by every cluster's sweep)."""
    if not cache.add(PRUNE_LOCK_KEY, 1, timeout=PRUNE_EVERY_SECONDS):
        return None
    result = jobs_prune()
    if any(result.values()):
        logger.info("pruned %(jobs)d job(s) and %(files)d file(s)", result)
    return result


def retention_summary() -> dict[str, Any]:
    """What the admin shows: how long jobs, files and progress events are kept."""
    from progress import conf as progress_conf

    return {
        "jobs_days": conf.keep_days(),
        "files_days": conf.files_keep_days(),
        "progress_seconds": progress_conf.retention_seconds(),
    }
