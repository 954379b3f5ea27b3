"""Job functions used only by the jobs benchmark (loaded through JOBS_EXTRA_MODULES)."""

from __future__ import annotations

import os

from jobs.context import JobContext
from jobs.registry import job


@job(name="bench.mark")
def mark(ctx: JobContext, path: str) -> None:
    """Append the job id to a file; a duplicate execution shows up as a repeated id."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{ctx.job_id}\n".encode())
    finally:
        os.close(fd)


@job(name="bench.hold", queue="exports", timeout=600)
def hold(seconds: float) -> None:
    """A long job on the `exports` queue (queue isolation)."""
    import time

    time.sleep(seconds)
