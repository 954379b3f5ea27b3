"""Job records (BookLogr's `tasks` table, extended) and the files they produce."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

# A job holds its unique key while it waits or runs; a finished one frees it.
ACTIVE_STATUSES = ("fresh", "started")


class Job(models.Model):
    class Status(models.TextChoices):
        FRESH = "fresh", "Fresh"
        STARTED = "started", "Started"
        SUCCESS = "success", "Success"
        FAILURE = "failure", "Failure"

    # The pytasks dialect names jobs by this opaque id, so ids cannot be enumerated there.
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    type = models.CharField(max_length=200, db_index=True)
    data = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.FRESH, db_index=True)
    worker = models.CharField(max_length=200, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_on = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs"
    )
    attempts = models.PositiveIntegerField(default=0)
    # Times a worker was lost under this job (killed, its cluster stopped): not the job's failure,
    # so it does not use an attempt, up to a limit (jobs.services.MAX_INTERRUPTIONS).
    interruptions = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=1)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    traceback = models.TextField(blank=True, default="")
    progress = models.FloatField(default=0)
    progress_message = models.CharField(max_length=500, blank=True, default="")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # Set when the job has been handed to django-q2; a fresh job with none is in the backlog.
    queued_at = models.DateTimeField(null=True, blank=True)
    run_after = models.DateTimeField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)
    # graphile-worker's `job_key`: while a job of this type and key waits or runs, a new
    # submission with the same key gets that job instead of a second one (the constraint below).
    unique_key = models.CharField(max_length=255, null=True, blank=True)
    # The named queue it runs on (its type's, or the one a django-tasks caller chose).
    queue = models.CharField(max_length=63, default="default", db_index=True)
    # The job this one runs again (`POST /v1/tasks/<id>/rerun`, the admin's rerun).
    rerun_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="reruns", db_index=True
    )

    # Set by `job_create` (not stored) when the submission's unique key matched an active job.
    existing: bool = False

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["status", "heartbeat_at"], name="jobs_status_heartbeat"),
            # The brokers' "when is the next delayed job due" and "which are due now".
            models.Index(
                fields=["run_after"], condition=Q(status="fresh", queued_at__isnull=True), name="jobs_delayed_due"
            ),
        ]
        constraints = [
            # The database, not a check-then-insert, keeps one active job per (type, unique_key).
            models.UniqueConstraint(
                fields=["type", "unique_key"],
                condition=Q(status__in=ACTIVE_STATUSES, unique_key__isnull=False),
                name="jobs_unique_key_active",
            )
        ]

    def __str__(self) -> str:
        # No status here: the page title would keep the state it was rendered with.
        return f"{self.type} #{self.pk}"

    @property
    def topic(self) -> str:
        return f"job:{self.pk}"

    @property
    def status_label(self) -> str:
        return job_status_label(self.status, self.cancel_requested)


def job_status_label(status: str, cancel_requested: bool) -> str:
    """What staff read: a cancelled job is stored (and answered on the seeds' wire) as `failure`."""
    return "cancelled" if status == Job.Status.FAILURE and cancel_requested else status


class JobAttempt(models.Model):
    """One run of a job by a worker, kept across retries with its error."""

    class Outcome(models.TextChoices):
        SUCCESS = "success", "Success"
        FAILURE = "failure", "Failure"
        RETRYING = "retrying", "Failed, retried"
        CANCELLED = "cancelled", "Cancelled"
        INTERRUPTED = "interrupted", "Worker lost"

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="attempt_history")
    worker = models.CharField(max_length=200, blank=True, default="")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField()
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    error = models.TextField(blank=True, default="")
    traceback = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["job", "id"]  # the order they ran in
        # The operations dashboard counts each minute's ended attempts (coordinator.services.operations_record).
        indexes = [models.Index(fields=["finished_at"], name="jobs_attempt_finished")]

    def __str__(self) -> str:
        return f"attempt of job {self.job_id}: {self.outcome}"


class JobFile(models.Model):
    """A file an export produced or an upload brought in (BookLogr's `files` table)."""

    class Format(models.TextChoices):
        CSV = "csv", "CSV"
        JSON = "json", "JSON"
        HTML = "html", "HTML"
        JSONL = "jsonl", "JSONL"

    filename = models.CharField(max_length=255, unique=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="job_files"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    format = models.CharField(max_length=8, choices=Format.choices)
    size = models.BigIntegerField(default=0)
    rows = models.BigIntegerField(default=0)
    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="files")
    uploaded = models.BooleanField(default=False)
    # A download is running until then (a lease, so a crashed download frees the file): the
    # prune leaves the file alone.
    downloading_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.filename


class JobSchedule(models.Model):
    """A recurring (cron or interval) or one-off typed job, run with its owner's permissions."""

    class Missed(models.TextChoices):
        SKIP = "skip", "Skip missed runs"
        CATCH_UP = "catch_up", "Run once to catch up"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="job_schedules")
    type = models.CharField(max_length=200)
    data = models.JSONField(default=dict, blank=True)
    cron = models.CharField(max_length=200, blank=True, default="")
    interval_seconds = models.PositiveIntegerField(null=True, blank=True)
    run_at = models.DateTimeField(null=True, blank=True)
    timezone = models.CharField(max_length=64, default="UTC")
    enabled = models.BooleanField(default=True)
    missed = models.CharField(max_length=16, choices=Missed.choices, default=Missed.SKIP)
    # The next occurrence (UTC), computed in the schedule's time zone; None when nothing is left.
    next_run_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["next_run_at"], condition=Q(enabled=True), name="jobs_schedule_due")]
        constraints = [
            # Exactly one way to say when.
            models.CheckConstraint(
                condition=(
                    Q(~Q(cron=""), interval_seconds__isnull=True, run_at__isnull=True)
                    | Q(cron="", interval_seconds__isnull=False, run_at__isnull=True)
                    | Q(cron="", interval_seconds__isnull=True, run_at__isnull=False)
                ),
                name="jobs_schedule_one_kind",
            )
        ]

    def __str__(self) -> str:
        return f"{self.type} ({self.when})"

    @property
    def when(self) -> str:
        if self.cron:
            return f"cron {self.cron} {self.timezone}"
        if self.interval_seconds:
            return f"every {self.interval_seconds} s"
        return f"once at {self.run_at:%Y-%m-%d %H:%M %Z}" if self.run_at else "once"


class JobScheduleRun(models.Model):
    """One occurrence of a schedule: the job it started, or why none was started."""

    schedule = models.ForeignKey(JobSchedule, on_delete=models.CASCADE, related_name="runs")
    occurrence = models.DateTimeField()
    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="schedule_runs")
    skipped = models.BooleanField(default=False)
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-occurrence"]
        constraints = [
            # The database guard: two clusters never start the same occurrence twice.
            models.UniqueConstraint(fields=["schedule", "occurrence"], name="jobs_schedule_run_once")
        ]

    def __str__(self) -> str:
        return f"schedule {self.schedule_id} at {self.occurrence:%Y-%m-%d %H:%M:%S}"
