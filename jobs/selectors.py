"""Reads of the jobs app."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.db.models import Count, F, Min, Q, QuerySet, Window
from django.db.models.functions import RowNumber
from django.utils import timezone

from coordinator.models import User
from jobs import conf
from jobs.errors import FileNotFoundForUserError, JobNotFoundError, ScheduleNotFoundError
from jobs.models import Job, JobFile, JobSchedule, JobScheduleRun
from jobs.registry import all_specs

_FILENAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")

JOB_EXPORT_COLUMNS = [
    "id",
    "type",
    "status",
    "data",
    "result",
    "error",
    "attempts",
    "worker",
    "created_by",
    "created_at",
    "started_at",
    "finished_at",
]


def job_get_for_user(*, job_id: int, user: User) -> Job:
    """The job if the user created it (admins see all); otherwise `JobNotFoundError`."""
    if not 0 < job_id < 2**63:  # ids beyond the column's range cannot exist
        raise JobNotFoundError()
    qs = Job.objects.select_related("created_by")
    if not user.is_admin:
        qs = qs.filter(created_by=user)
    job = qs.filter(pk=job_id).first()
    if job is None:
        raise JobNotFoundError()
    return job


def job_list(
    *,
    user: User,
    status: str | None = None,
    type: str | None = None,
    queue: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    unique_key: str | None = None,
) -> QuerySet[Job]:
    """The user's jobs (admins: everyone's), newest first, filtered; `unique_key` is the key as
    the caller sent it (stored in the caller's scope, see jobs.api.common.scoped_unique_key)."""
    qs = Job.objects.select_related("created_by").order_by("-id")
    if not user.is_admin:
        qs = qs.filter(created_by=user)
    if status:
        qs = qs.filter(status=status)
    if type:
        qs = qs.filter(type=type)
    if queue:
        qs = qs.filter(queue=queue)
    if created_after:
        qs = qs.filter(created_at__gte=created_after)
    if created_before:
        qs = qs.filter(created_at__lt=created_before)
    if unique_key:
        qs = qs.filter(Q(unique_key=unique_key) | Q(unique_key__endswith=f"/{unique_key}"))
    return qs


def job_get_by_uuid(*, public_id: str) -> Job | None:
    """The job named by its pytasks id, or None (also for malformed ids)."""
    import uuid

    try:
        value = uuid.UUID(str(public_id))
    except ValueError:
        return None
    return Job.objects.filter(uuid=value).first()


def job_next_due() -> datetime | None:
    """When the earliest delayed `fresh` job not yet queued is due, or None."""
    due = Job.objects.filter(status=Job.Status.FRESH, queued_at__isnull=True, run_after__isnull=False)
    return due.aggregate(first=Min("run_after"))["first"]


def queue_summary() -> list[dict[str, Any]]:
    """Per job queue: jobs waiting (`fresh`, due or not) and running (`started`), every queue a
    job type names included."""
    rows: dict[str, dict[str, Any]] = {
        spec.queue: {"queue": spec.queue, "waiting": 0, "running": 0} for spec in all_specs()
    }
    active = Job.objects.filter(status__in=[Job.Status.FRESH, Job.Status.STARTED])
    for row in active.values("queue", "status").annotate(n=Count("id")):
        entry = rows.setdefault(row["queue"], {"queue": row["queue"], "waiting": 0, "running": 0})
        entry["waiting" if row["status"] == Job.Status.FRESH else "running"] += row["n"]
    return sorted(rows.values(), key=lambda entry: entry["queue"])


def schedule_list(*, user: User) -> QuerySet[JobSchedule]:
    """The user's schedules (admins: everyone's)."""
    qs = JobSchedule.objects.select_related("owner").order_by("id")
    return qs if user.is_admin else qs.filter(owner=user)


def schedule_get_for_user(*, schedule_id: int, user: User) -> JobSchedule:
    """The schedule if the user owns it (admins: any); otherwise `ScheduleNotFoundError`."""
    if not 0 < schedule_id < 2**63:
        raise ScheduleNotFoundError()
    schedule = schedule_list(user=user).filter(pk=schedule_id).first()
    if schedule is None:
        raise ScheduleNotFoundError()
    return schedule


def schedule_last_runs(*, schedule_ids: list[int], count: int = 10) -> dict[int, list[JobScheduleRun]]:
    """The last `count` runs of each schedule, newest first, with their jobs."""
    runs: dict[int, list[JobScheduleRun]] = {pk: [] for pk in schedule_ids}
    rows = (
        JobScheduleRun.objects.filter(schedule_id__in=schedule_ids)
        .annotate(rank=Window(RowNumber(), partition_by=[F("schedule_id")], order_by=F("occurrence").desc()))
        .filter(rank__lte=count)
        .select_related("job")
        .order_by("schedule_id", "-occurrence")
    )
    for run in rows:
        runs[run.schedule_id].append(run)
    return runs


def schedule_next_due() -> datetime | None:
    """When the earliest enabled schedule is due, or None."""
    return JobSchedule.objects.filter(enabled=True, next_run_at__isnull=False).aggregate(first=Min("next_run_at"))[
        "first"
    ]


def job_counts() -> dict[str, int]:
    return {row["status"]: row["n"] for row in Job.objects.values("status").annotate(n=Count("id"))}


def file_list(*, user: User) -> QuerySet[JobFile]:
    """The user's files, newest first."""
    return JobFile.objects.filter(owner=user).order_by("-created_at", "-id")


def file_get_for_owner(*, filename: str, user: User) -> JobFile:
    """The file row of that name if the user owns it (only owners may download)."""
    # Our names are `<prefix>_<yymmdd>_<8 chars>.<ext>`; anything else cannot be a file of ours.
    if not _FILENAME.fullmatch(filename):
        raise FileNotFoundForUserError()
    row = JobFile.objects.filter(filename=filename, owner=user).first()
    if row is None:
        raise FileNotFoundForUserError()
    return row


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def job_export_rows(*, user: User | None, everything: bool) -> Iterator[dict[str, Any]]:
    """The user's jobs (all jobs when `everything`), one row each, streamed without model instances."""
    qs = Job.objects.order_by("pk")
    if not everything:
        qs = qs.filter(created_by=user)
    rows = qs.values_list(
        "pk",
        "type",
        "status",
        "data",
        "result",
        "error",
        "attempts",
        "worker",
        "created_by__email",
        "created_at",
        "started_at",
        "finished_at",
    )
    for pk, type_, status, data, result, error, attempts, worker, email, created, started, finished in rows.iterator(
        chunk_size=5000
    ):
        yield {
            "id": pk,
            "type": type_,
            "status": status,
            "data": data,
            "result": result,
            "error": error,
            "attempts": attempts,
            "worker": worker,
            "created_by": email,
            "created_at": _iso(created),
            "started_at": _iso(started),
            "finished_at": _iso(finished),
        }


def job_permissions_sync() -> None:
    """Create a `jobs.run_<name>` permission for each protected job type."""
    ct = ContentType.objects.get_for_model(Job)
    for spec in all_specs():
        if spec.protected:
            Permission.objects.get_or_create(
                content_type=ct, codename=spec.permission_codename, defaults={"name": f"Can run job {spec.name}"[:255]}
            )


def cluster_state() -> str:
    """The job clusters' liveness from their sweeps: `ok`, `stale` (none swept for three sweep
    periods: every cluster is gone or frozen), or `absent` (none ever ran against this cache)."""
    seen = sweep_last_seen()
    if seen is None:
        return "absent"
    return "ok" if time.time() - seen < 3 * conf.sweep_seconds() + 5 else "stale"


def sweep_last_seen() -> float | None:
    """When a cluster last ran the recovery sweep (epoch seconds), or None."""
    from django.core.cache import cache

    seen = cache.get(conf.SWEEP_SEEN_KEY)
    return None if seen is None else float(seen)


def jobs_heartbeat_stale() -> QuerySet[Job]:
    """Started jobs whose worker has not reported within JOBS_STALE_SECONDS (the sweep recovers them)."""
    cutoff = timezone.now() - timedelta(seconds=conf.stale_seconds())
    return Job.objects.filter(status=Job.Status.STARTED, heartbeat_at__lt=cutoff)


def cluster_stall() -> str | None:
    """Why the job clusters make no progress, or None: no sweep lately (the broker loop is gone or
    frozen), or jobs due for JOBS_STALL_SECONDS while no job runs and none started in that time
    (the workers are stuck: a killed worker can leave the queue's read lock held)."""
    window_seconds = conf.stall_seconds()
    state = cluster_state()
    if state != "ok":
        return f"no cluster swept lately ({state})"
    since = timezone.now() - timedelta(seconds=window_seconds)
    waiting = Job.objects.filter(
        Q(run_after__isnull=True) | Q(run_after__lte=since), status=Job.Status.FRESH, created_at__lt=since
    )
    if not waiting.exists():
        return None
    if Job.objects.filter(Q(status=Job.Status.STARTED) | Q(started_at__gte=since)).exists():
        return None
    return f"jobs have waited more than {window_seconds:g} s and no worker takes any"
