"""The jobs' panel of the operations dashboard (coordinator/admin_site.py): the values recorded
each minute, the charts drawn from them, and what needs attention. Reads only, through indexes."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count
from django.urls import reverse
from django.utils import timezone

from jobs.models import Job, JobAttempt
from jobs.selectors import jobs_heartbeat_stale

CHARTS = [
    {"title": "Jobs ended per minute", "series": {"jobs.succeeded": "succeeded", "jobs.failed": "failed"}},
    {"title": "Job run time (s)", "series": {"jobs.run_p95": "p95", "jobs.run_mean": "mean"}},
]

_FAILED = (JobAttempt.Outcome.FAILURE, JobAttempt.Outcome.CANCELLED)


def minute(start: datetime, end: datetime) -> dict[str, float | None]:
    """Attempts ended in [start, end) by outcome and their run times; jobs waiting and running now."""
    runs: list[float] = []
    succeeded = failed = 0
    ended = JobAttempt.objects.filter(finished_at__gte=start, finished_at__lt=end).values_list(
        "outcome", "started_at", "finished_at"
    )
    for outcome, started_at, finished_at in ended.iterator(chunk_size=5000):
        succeeded += outcome == JobAttempt.Outcome.SUCCESS
        failed += outcome in _FAILED
        if started_at is not None:
            runs.append((finished_at - started_at).total_seconds())
    runs.sort()
    live = dict(
        Job.objects.filter(status__in=[Job.Status.FRESH, Job.Status.STARTED])
        .order_by()
        .values_list("status")
        .annotate(n=Count("id"))
    )
    return {
        "jobs.succeeded": succeeded,
        "jobs.failed": failed,
        "jobs.run_mean": sum(runs) / len(runs) if runs else None,
        "jobs.run_p95": runs[min(len(runs) - 1, int(len(runs) * 0.95))] if runs else None,
        "jobs.running": live.get(Job.Status.STARTED, 0),
        "jobs.waiting": live.get(Job.Status.FRESH, 0),
    }


def attention(now: datetime | None = None) -> list[dict[str, Any]]:
    """Started jobs whose worker went silent, and attempts that failed in the last hour."""
    now = now or timezone.now()
    url = reverse("admin:jobs_job_changelist")
    failed = JobAttempt.objects.filter(finished_at__gte=now - timedelta(hours=1), outcome__in=_FAILED).count()
    return [
        {"title": "Jobs with a stale heartbeat", "count": jobs_heartbeat_stale().count(), "url": f"{url}?stuck=stale"},
        {"title": "Job attempts failed in the last hour", "count": failed, "url": f"{url}?status__exact=failure"},
    ]
