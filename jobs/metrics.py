"""The jobs' families for /metrics (coordinator/metrics.py): counted in the services, and the
queue's state read at each scrape."""

from __future__ import annotations

from collections.abc import Iterator

from django.db.models import Count
from django.utils import timezone
from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from coordinator.metrics import WORK_BUCKETS
from jobs.models import Job, JobAttempt

LABELS = ["type", "queue"]

submitted = Counter("coordinator_jobs_submitted", "Jobs submitted, by type and queue.", LABELS)
started = Counter("coordinator_jobs_started", "Job attempts started by a worker.", LABELS)
succeeded = Counter("coordinator_jobs_succeeded", "Jobs that ended in success.", LABELS)
failed = Counter("coordinator_jobs_failed", "Jobs that ended in failure (cancelled ones included).", LABELS)
retried = Counter("coordinator_jobs_retried", "Failed attempts put back to run again.", LABELS)
stale_recovered = Counter(
    "coordinator_jobs_stale_recovered", "Started jobs taken back from a worker that stopped heart-beating.", LABELS
)
queue_wait = Histogram(
    "coordinator_jobs_queue_wait_seconds",
    "Time from a job's hand-off to the queue to a worker starting it.",
    LABELS,
    buckets=WORK_BUCKETS,
)
run_duration = Histogram(
    "coordinator_jobs_run_duration_seconds", "Time one attempt of a job ran.", LABELS, buckets=WORK_BUCKETS
)


def _labels(job: Job) -> tuple[str, str]:
    return job.type, job.queue or "default"


def job_submitted(job: Job) -> None:
    """Count a stored job."""
    submitted.labels(*_labels(job)).inc()


def job_started(job: Job) -> None:
    """Count an attempt a worker claimed, with its wait in the queue."""
    labels = _labels(job)
    started.labels(*labels).inc()
    if job.queued_at is not None and job.started_at is not None:
        queue_wait.labels(*labels).observe(max(0.0, (job.started_at - job.queued_at).total_seconds()))


_ENDED = {
    JobAttempt.Outcome.SUCCESS: succeeded,
    JobAttempt.Outcome.FAILURE: failed,
    JobAttempt.Outcome.CANCELLED: failed,
    JobAttempt.Outcome.RETRYING: retried,
}


def attempt_ended(job: Job, outcome: str) -> None:
    """Count an attempt's outcome and its running time (a lost worker's is counted by the sweep)."""
    counter = _ENDED.get(JobAttempt.Outcome(outcome))
    if counter is None:
        return
    labels = _labels(job)
    counter.labels(*labels).inc()
    if job.started_at is not None:
        run_duration.labels(*labels).observe(max(0.0, (timezone.now() - job.started_at).total_seconds()))


def job_stale_recovered(job: Job) -> None:
    """Count a job taken back from a lost worker."""
    stale_recovered.labels(*_labels(job)).inc()


class JobsCollector:
    """Queue depth and running jobs, by type, from the status index (only fresh and started rows)."""

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily("coordinator_jobs_queue_depth", "Jobs waiting to start (fresh).", labels=LABELS)
        running = GaugeMetricFamily("coordinator_jobs_running", "Jobs started and not finished.", labels=LABELS)
        rows = (
            Job.objects.filter(status__in=[Job.Status.FRESH, Job.Status.STARTED])
            .order_by()
            .values("status", "type", "queue")
            .annotate(n=Count("id"))
        )
        for row in rows:
            family = depth if row["status"] == Job.Status.FRESH else running
            family.add_metric([row["type"], row["queue"] or "default"], row["n"])
        yield depth
        yield running
