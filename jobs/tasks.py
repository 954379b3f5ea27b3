"""django-q2 entry points: take ids, call services."""

from __future__ import annotations

from typing import Any

from django.db import close_old_connections, connection

from jobs.services import job_execute, jobs_sweep


def job_run(job_id: int, job_type: str | None = None) -> str:
    """Run job `job_id` if this worker can claim it, on a connection that works: a worker's
    persistent connection may have died with a database restart since its last job."""
    close_old_connections()
    if connection.connection is not None and not connection.is_usable():
        connection.close()
    return job_execute(job_id=job_id, job_type=job_type)


def sweep() -> dict[str, list[Any]]:
    """Recover lost jobs and queue the backlog (also run by the broker loop)."""
    return jobs_sweep()
