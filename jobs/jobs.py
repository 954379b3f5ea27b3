"""The built-in jobs: BookLogr's exports (of every dataset the apps register) and pytasks' example pack."""

from __future__ import annotations

import math
from typing import Any

from coordinator.selectors import AUDIT_EXPORT_COLUMNS, audit_export_rows
from jobs import (
    backend,  # noqa: F401 - registers `django_tasks.run` (the django-tasks backend's job)
    conf,
)
from jobs.bulk import bulk_action
from jobs.context import JobContext
from jobs.exports import DatasetName, dataset_register, export_run
from jobs.models import Job
from jobs.registry import job
from jobs.selectors import JOB_EXPORT_COLUMNS, job_export_rows
from jobs.services import job_cancel, job_retry

dataset_register(name="jobs", title="Background jobs", columns=JOB_EXPORT_COLUMNS, rows=job_export_rows)
dataset_register(name="audit", title="Audit trail", columns=AUDIT_EXPORT_COLUMNS, rows=audit_export_rows)


@job(name="csv_export", signed_in=True, timeout=3600, queue="exports")
def csv_export(ctx: JobContext, datasets: list[DatasetName] | None = None, everything: bool = False) -> dict[str, Any]:
    """Export what the user owns (every registered dataset, or the ones named) as one CSV file."""
    return export_run(ctx, fmt="csv", datasets=datasets, everything=everything)


@job(name="json_export", signed_in=True, timeout=3600, queue="exports")
def json_export(ctx: JobContext, datasets: list[DatasetName] | None = None, everything: bool = False) -> dict[str, Any]:
    """Export what the user owns as a JSON array."""
    return export_run(ctx, fmt="json", datasets=datasets, everything=everything)


@job(name="html_export", signed_in=True, timeout=3600, queue="exports")
def html_export(ctx: JobContext, datasets: list[DatasetName] | None = None, everything: bool = False) -> dict[str, Any]:
    """Export what the user owns as a readable HTML page."""
    return export_run(ctx, fmt="html", datasets=datasets, everything=everything)


@bulk_action(name="admin.jobs_retry", model=Job, permission="jobs.change_job", done_as="Retried", verb="queued again")
def retry_one(job: Job) -> bool:
    job_retry(job=job)  # refuses (JobStateError) anything not in status failure
    return True


@bulk_action(name="admin.jobs_cancel", model=Job, permission="jobs.change_job", done_as="Cancelled", verb="cancelled")
def cancel_one(job: Job) -> bool:
    job_cancel(job=job)  # refuses a finished job
    return True


@job(name="noop")
def noop() -> None:
    """Do nothing (benchmarks and health checks)."""
    return None


if conf.example_pack():
    # pytasks' de-facto fixture pack `brenopelegrin/pytasks-test`, kept for drop-in clients.

    @job(name="test.main.add")
    def add(x: int, y: int) -> int:
        """Add two integers."""
        return x + y

    @job(name="test.main.subtract")
    def subtract(x: int, y: int) -> int:
        """Subtract y from x."""
        return x - y

    @job(name="test.main.hypot")
    def hypot(x: float, y: float) -> float:
        """The hypotenuse of a right triangle."""
        return math.hypot(x, y)

    @job(name="test.main.myProtectedTask", protected=True)
    def my_protected_task(x: int, y: int) -> int:
        """A protected example: callers need the permission or a token allowing it."""
        return x * y
