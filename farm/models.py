"""Runs of numbered tasks, the tasks handed out so far, and the workers that claim them."""

from __future__ import annotations

import uuid as uuid_lib

from django.conf import settings
from django.db import models
from django.db.models import Q


def new_run_uuid() -> str:
    return uuid_lib.uuid4().hex


class Run(models.Model):
    """A run of `num_tasks` numbered tasks; task rows exist only once handed out or touched."""

    uuid = models.CharField(max_length=32, unique=True, default=new_run_uuid, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="farm_runs")
    name = models.CharField(max_length=200, blank=True, default="")
    labels = models.JSONField(default=list, blank=True, help_text='A list of short strings, e.g. ["nightly"].')
    num_tasks = models.BigIntegerField()
    # The lowest task number never handed out by the counter (rows may exist above it when
    # clients touched numbers out of order; hand-out skips those).
    next_task = models.BigIntegerField(default=0)
    max_computing = models.PositiveIntegerField(
        null=True, blank=True, help_text="At most this many tasks computing at once (empty: no limit)."
    )
    paused = models.BooleanField(default=False, help_text="A paused run hands out no task.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(condition=Q(num_tasks__gte=0), name="farm_run_num_tasks_gte_0"),
            models.CheckConstraint(
                condition=Q(next_task__gte=0) & Q(next_task__lte=models.F("num_tasks")),
                name="farm_run_next_task_in_range",
            ),
        ]

    def __str__(self) -> str:
        return self.name or f"run {self.uuid}"


class Worker(models.Model):
    """A worker process as registered by `taskfarm-worker` (`POST /api/worker`)."""

    uuid = models.CharField(max_length=64, unique=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="farm_workers")
    hostname = models.CharField(max_length=255)
    pid = models.BigIntegerField()
    start = models.DateTimeField(auto_now_add=True)
    last_seen = models.DateTimeField(auto_now_add=True)
    # Tasks this worker finished; a restart does not take them back, so this is not a row count.
    tasks_done = models.BigIntegerField(default=0)
    # Likewise tasks it reported failed (or held past their last lease), and the seconds from
    # hand-out to finish summed over the tasks it finished: the dashboard's failures per minute and
    # mean completion latency are the minute's growth of these totals (farm/operations.py), kept
    # by the update that credits `tasks_done` anyway.
    tasks_failed = models.BigIntegerField(default=0)
    done_seconds = models.FloatField(default=0.0)

    class Meta:
        ordering = ["-last_seen"]

    def __str__(self) -> str:
        return f"{self.hostname}:{self.pid} ({self.uuid})"


class Task(models.Model):
    """One numbered task of a run, materialised when handed out or first read/written."""

    class Status(models.TextChoices):
        WAITING = "waiting", "waiting"
        COMPUTING = "computing", "computing"
        DONE = "done", "done"
        FAILED = "failed", "failed"

    # No index of its own: the unique (run, task) serves every lookup by run.
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="tasks", db_index=False)
    task = models.BigIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.WAITING)
    percent_completed = models.FloatField(default=0.0)
    worker = models.ForeignKey(Worker, null=True, blank=True, on_delete=models.SET_NULL, related_name="tasks")
    # Hand-outs so far; a task whose lease lapsed FARM_MAX_ATTEMPTS times fails.
    attempts = models.PositiveIntegerField(default=0)
    failure = models.CharField(max_length=500, blank=True, default="", help_text="Why the task failed.")
    started = models.DateTimeField(null=True, blank=True)
    updated = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "task"]
        constraints = [
            models.UniqueConstraint(fields=["run", "task"], name="farm_task_unique_number"),
        ]
        # Partial indexes hold only the rows hand-out looks for, so finished rows (most of a run)
        # never make hand-out slower as the run progresses.
        indexes = [
            models.Index(fields=["run", "task"], condition=Q(status="waiting"), name="farm_task_waiting"),
            models.Index(fields=["run", "updated"], condition=Q(status="computing"), name="farm_task_computing"),
            # Each worker's tasks computing now (the worker list counts them): the few live rows only.
            models.Index(fields=["worker"], condition=Q(status="computing"), name="farm_task_worker_computing"),
        ]

    def __str__(self) -> str:
        return f"task {self.task} of run {self.run_id}"
