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
    num_tasks = models.BigIntegerField()
    # The lowest task number never handed out by the counter (rows may exist above it when
    # clients touched numbers out of order; hand-out skips those).
    next_task = models.BigIntegerField(default=0)
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
        return f"run {self.uuid} ({self.num_tasks} tasks)"


class Worker(models.Model):
    """A worker process as registered by `taskfarm-worker` (`POST /api/worker`)."""

    uuid = models.CharField(max_length=64, unique=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="farm_workers")
    hostname = models.CharField(max_length=255)
    pid = models.BigIntegerField()
    start = models.DateTimeField(auto_now_add=True)
    last_seen = models.DateTimeField(auto_now_add=True)
    # Tasks this worker finished (a restart does not take them back), counted by the writes that
    # finish them: reading it costs nothing, where counting rows would need an index on
    # `Task.worker` that every hand-out and every completion pays for.
    tasks_done = models.BigIntegerField(default=0)
    # The id (`jti`) of the farm token this worker registered with (NULL: a password login, an older
    # token). A token that exactly one worker registered with names that worker (`farm.api.identity`);
    # workers sharing a token are known by a cookie instead.
    token_id = models.CharField(max_length=32, null=True, blank=True, db_index=True, editable=False)

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

    # No index of its own: the unique (run, task) serves every lookup by run. No database-level
    # foreign keys either (`db_constraint=False`), here and on `worker`: PostgreSQL checks one per
    # inserted or re-assigned row (two lookups, each locking the parent row), which cost the batch
    # hand-out a fifth of its throughput (docs/farm.md, "Storage"). Rows are written only by
    # `farm.services`, which locks the run row before inserting (a deleted run gets no new rows);
    # deleting a run or a worker still cascades / sets NULL through Django.
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="tasks", db_index=False, db_constraint=False)
    task = models.BigIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.WAITING)
    percent_completed = models.FloatField(default=0.0)
    # No index: nothing looks tasks up by worker on a hot path (the counts the admin shows come from
    # `Worker.tasks_done` and the partial index of computing rows).
    worker = models.ForeignKey(
        Worker,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="tasks",
        db_index=False,
        db_constraint=False,
    )
    started = models.DateTimeField(null=True, blank=True)
    updated = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "task"]
        constraints = [
            models.UniqueConstraint(fields=["run", "task"], name="farm_task_unique_number"),
        ]
        # Partial indexes: each holds only the rows hand-out looks for, so the many rows that are
        # created computing and then finish (most of them, in most runs) are never entered in them,
        # and a finished task costs fewer index writes. Queries using them name the status as a
        # literal, so that prepared (generic) plans can use them too.
        indexes = [
            # Hand-out takes the lowest waiting number of a run.
            models.Index(fields=["run", "task"], condition=Q(status="waiting"), name="farm_task_waiting"),
            # Lease expiry: computing tasks of a run whose worker was silent the longest; the worker
            # column lets the admin count a worker's computing tasks from this small index alone.
            models.Index(
                fields=["run", "updated", "worker"], condition=Q(status="computing"), name="farm_task_computing"
            ),
        ]

    def __str__(self) -> str:
        return f"task {self.task} of run {self.run_id}"
