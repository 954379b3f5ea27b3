"""Reads: runs visible to a user, their counts, and the export rows for `jobs`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Exists, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from coordinator.models import User
from farm.conf import LEASE_SWEEP, lease_seconds
from farm.errors import RunNotFoundError, WorkerNotFoundError
from farm.models import Run, Task, Worker


@dataclass(frozen=True)
class RunCounts:
    """The run's aggregates, computed with one indexed GROUP BY over its materialised rows."""

    num_tasks: int
    num_waiting: int
    num_computing: int
    num_done: int
    num_failed: int
    percent_done: float

    @property
    def num_not_started(self) -> int:
        return self.num_tasks - self.num_waiting - self.num_computing - self.num_done - self.num_failed

    def as_state(self) -> dict[str, Any]:
        return {
            "percentDone": self.percent_done,
            "numWaiting": self.num_waiting,
            "numComputing": self.num_computing,
            "numDone": self.num_done,
            "numNotStarted": self.num_not_started,
            "numFailed": self.num_failed,
            "numTasks": self.num_tasks,
        }


def run_visible_to(user: User) -> QuerySet[Run]:
    """Runs the user may see and change: their own, or all for admins."""
    runs = Run.objects.all()
    return runs if user.is_admin else runs.filter(owner=user)


def run_list(*, user: User) -> QuerySet[Run]:
    """The user's runs in creation order."""
    return run_visible_to(user).order_by("id")


def run_get(*, user: User, uuid: str) -> Run:
    """One run by uuid, if the user may see it."""
    run = run_visible_to(user).filter(uuid=uuid).first()
    if run is None:
        raise RunNotFoundError()
    return run


def worker_get(*, user: User, uuid: str) -> Worker:
    """One worker by uuid, if it is the user's (or the user is an admin)."""
    worker = _workers_visible_to(user).filter(uuid=uuid).first()
    if worker is None:
        raise WorkerNotFoundError()
    return worker


def with_computing_counts(workers: QuerySet[Worker]) -> QuerySet[Worker]:
    """`workers`, each with `n_computing`, its tasks computing now (tasks done is a column)."""
    computing = (
        Task.objects.filter(worker=OuterRef("pk"), status=Task.Status.COMPUTING)
        .order_by()
        .values("worker")
        .annotate(n=Count("*"))
        .values("n")
    )
    return workers.annotate(n_computing=Coalesce(Subquery(computing), 0))


def _workers_visible_to(user: User) -> QuerySet[Worker]:
    return Worker.objects.all() if user.is_admin else Worker.objects.filter(owner=user)


def task_read(*, user: User, run_uuid: str, number: int) -> Task | None:
    """Task `number` of a run the user may see, in one query; None when either is not there (yet)."""
    return Task.objects.filter(run__in=run_visible_to(user).filter(uuid=run_uuid), task=number).first()


def run_counts(*, run: Run) -> RunCounts:
    """Counts by status and the run's percentage (the seed's semantics: existing rows only)."""
    return runs_counts(runs=[run])[run.pk]


def runs_counts(*, runs: list[Run]) -> dict[int, RunCounts]:
    """`run_counts` of several runs (an admin page of them) in one grouped query, by run id."""
    found: dict[int, dict[str, Any]] = {run.pk: {"pct": 0.0} for run in runs}
    rows = (
        Task.objects.filter(run_id__in=list(found))
        .order_by()
        .values("run_id", "status")
        .annotate(n=Count("id"), pct=Sum("percent_completed"))
    )
    for row in rows:
        counts = found[row["run_id"]]
        counts[row["status"]] = int(row["n"])
        counts["pct"] += float(row["pct"] or 0.0)
    return {
        run.pk: RunCounts(
            num_tasks=run.num_tasks,
            num_waiting=found[run.pk].get(Task.Status.WAITING.value, 0),
            num_computing=found[run.pk].get(Task.Status.COMPUTING.value, 0),
            num_done=found[run.pk].get(Task.Status.DONE.value, 0),
            num_failed=found[run.pk].get(Task.Status.FAILED.value, 0),
            percent_done=found[run.pk]["pct"] / run.num_tasks if run.num_tasks else 0.0,
        )
        for run in runs
    }


FARM_EXPORT_COLUMNS: list[str] = [
    "run_uuid",
    "run_owner",
    "run_num_tasks",
    "run_created_at",
    "task",
    "status",
    "percent_completed",
    "started",
    "updated",
    "worker_uuid",
    "worker_hostname",
    "worker_pid",
]


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def farm_export_rows(*, user: User, everything: bool) -> Iterator[dict[str, Any]]:
    """One JSON-serialisable row per run and materialised task, streamed (contract 4)."""
    tasks = Task.objects.all() if everything else Task.objects.filter(run__owner=user)
    rows = tasks.order_by("run_id", "task").values_list(
        "run__uuid",
        "run__owner__email",
        "run__num_tasks",
        "run__created_at",
        "task",
        "status",
        "percent_completed",
        "started",
        "updated",
        "worker__uuid",
        "worker__hostname",
        "worker__pid",
    )
    for (
        run_uuid,
        owner,
        num_tasks,
        created,
        task,
        status,
        pct,
        started,
        updated,
        w_uuid,
        w_host,
        w_pid,
    ) in rows.iterator(chunk_size=2000):
        yield {
            "run_uuid": run_uuid,
            "run_owner": owner,
            "run_num_tasks": num_tasks,
            "run_created_at": _iso(created),
            "task": task,
            "status": status,
            "percent_completed": pct,
            "started": _iso(started),
            "updated": _iso(updated),
            "worker_uuid": w_uuid,
            "worker_hostname": w_host,
            "worker_pid": w_pid,
        }


# --- stuck work, made visible (admin states, filters and index counts) ---------------------------


def lease_cutoff(now: datetime | None = None) -> datetime:
    """A computing task not updated since this moment holds a lapsed lease; a worker not seen
    since then stopped reporting (it is lost)."""
    return (now or timezone.now()) - timedelta(seconds=lease_seconds())


def workers_alive(now: datetime | None = None) -> QuerySet[Worker]:
    return Worker.objects.filter(last_seen__gte=lease_cutoff(now))


def workers_lost(now: datetime | None = None) -> QuerySet[Worker]:
    return Worker.objects.filter(last_seen__lt=lease_cutoff(now))


def tasks_past_lease(now: datetime | None = None) -> QuerySet[Task]:
    """Computing tasks whose worker went silent past the lease (the sweep returns them soon)."""
    return Task.objects.filter(status=Task.Status.COMPUTING, updated__lt=lease_cutoff(now))


def tasks_unclaimed(now: datetime | None = None) -> QuerySet[Task]:
    """Waiting tasks no live worker will claim: their run is paused, or no worker is alive."""
    return Task.objects.filter(status=Task.Status.WAITING).filter(Q(run__paused=True) | ~Exists(workers_alive(now)))


def lease_sweep_last_run() -> datetime | None:
    """When the lease sweep (a django-q2 schedule) last finished, or None if it never ran."""
    from django_q.models import Schedule
    from django_q.models import Task as QueueTask

    last = Schedule.objects.filter(name=LEASE_SWEEP).values_list("task", flat=True).first()
    if not last:
        return None
    return QueueTask.objects.filter(id=last).values_list("stopped", flat=True).first()
