"""The delivery job: one attempt per run, retried by the jobs app with exponential backoff."""

from __future__ import annotations

from jobs.context import JobContext
from jobs.registry import job
from webhooks.services import DELIVER_JOB, DELIVERY_ATTEMPTS, RETRY_BASE_SECONDS, delivery_attempt


@job(name=DELIVER_JOB, protected=True, timeout=60, max_attempts=DELIVERY_ATTEMPTS, backoff=RETRY_BASE_SECONDS)
def deliver(ctx: JobContext, delivery_id: int) -> str:
    """Send one webhook delivery (signed); a failure is retried, doubling the wait, for up to 24 h."""
    return delivery_attempt(delivery_id=delivery_id, final=ctx.attempt >= DELIVERY_ATTEMPTS)
