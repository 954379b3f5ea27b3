"""django-q2 entry points: take ids, call services."""

from __future__ import annotations

from jobs.services import job_execute, jobs_sweep


def job_run(job_id: int) -> str:
    """Run job `job_id` if this worker can claim it."""
    return job_execute(job_id=job_id)


def sweep() -> dict[str, list[int]]:
    """Recover lost jobs and queue the backlog (also run by the broker loop)."""
    return jobs_sweep()
