"""Reads: runs visible to a user, their counts, and the export rows for `jobs`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db.models import Count, OuterRef, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce
from django.utils.dateparse import parse_datetime

from coordinator.db import prepared_cursor
from coordinator.models import User
from farm.errors import RunNotFoundError, WorkerNotFoundError
from farm.models import Run, Task, Worker


@dataclass(frozen=True)
class RunCounts:
    """The run's aggregates, computed with one indexed GROUP BY over its materialised rows."""

    num_tasks: int
    num_waiting: int
    num_computing: int
    num_done: int
    percent_done: float

    @property
    def num_not_started(self) -> int:
        return self.num_tasks - self.num_waiting - self.num_computing - self.num_done

    def as_state(self) -> dict[str, Any]:
        return {
            "percentDone": self.percent_done,
            "numWaiting": self.num_waiting,
            "numComputing": self.num_computing,
            "numDone": self.num_done,
            "numNotStarted": self.num_not_started,
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
    """`workers`, each with `n_computing`, its tasks computing now. Tasks done is a column
    (`Worker.tasks_done`); computing tasks are counted per worker from the partial index of
    computing rows, which holds only the tasks out with workers now (an index-only scan)."""
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


# token id -> uuid of the one worker registered with it. A process keeps what it read (bounded): a
# token's worker changes only when another worker registers with the same token (the token then
# names none) or the worker is deleted, and before refusing an update the full path reads every
# worker of the token afresh (`workers_for_token`), so a stale entry costs a query there and never
# a wrong 409.
_token_workers: dict[str, str] = {}
TOKEN_WORKERS_MAX = 10_000


def worker_uuid_for_token(token_id: str, *, cached: bool = True) -> str | None:
    """The uuid of the worker that registered with the farm token `token_id`, when exactly one did
    (read once per process unless `cached` is False; otherwise looked up each time, since a worker
    may register with it at any moment, in any process)."""
    uuid = _token_workers.get(token_id) if cached else None
    if uuid is None:
        found = workers_for_token(token_id)  # also keeps (or forgets) the answer for this process
        uuid = next(iter(found)) if len(found) == 1 else None
    return uuid


def workers_for_token(token_id: str) -> frozenset[str]:
    """The uuids of every worker registered with the farm token `token_id`, read now (what this
    process keeps for `worker_uuid_for_token` is mended with it)."""
    found = frozenset(Worker.objects.filter(token_id=token_id).values_list("uuid", flat=True))
    if len(found) == 1:
        if len(_token_workers) >= TOKEN_WORKERS_MAX:
            _token_workers.clear()
        _token_workers[token_id] = next(iter(found))
    else:
        _token_workers.pop(token_id, None)
    return found


def _aware(value: Any) -> Any:
    # Raw SQL on SQLite gives a naive datetime (or text) in UTC; PostgreSQL an aware datetime already.
    if isinstance(value, str):
        value = parse_datetime(value)
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def worker_and_run_get(*, user: User, worker_uuid: str, run_uuid: str) -> tuple[Worker, Run]:
    """The worker and the run of a hand-out or batch request, read in one query (plain SQL: this runs
    on every claim, and building the ORM query cost more than running it); a missing one is the
    same 404 as `worker_get` then `run_get` give (the worker is checked first)."""
    owned = "" if user.is_admin else " AND r.owner_id = %s AND w.owner_id = %s"
    sql = (
        f"SELECT r.id, r.owner_id, r.num_tasks, r.next_task, r.created_at, "
        f"w.id, w.owner_id, w.hostname, w.pid, w.start, w.last_seen "
        f"FROM {Run._meta.db_table} r, {Worker._meta.db_table} w WHERE r.uuid = %s AND w.uuid = %s{owned}"
    )
    params: list[Any] = [run_uuid, worker_uuid, *([] if user.is_admin else [user.pk, user.pk])]
    with prepared_cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        worker_get(user=user, uuid=worker_uuid)  # raises WorkerNotFoundError first, as before
        run_get(user=user, uuid=run_uuid)
        raise RunNotFoundError()  # not reached unless one was deleted in between
    run = Run(id=row[0], uuid=run_uuid, owner_id=row[1], num_tasks=row[2], next_task=row[3], created_at=_aware(row[4]))
    worker = Worker(
        id=row[5],
        uuid=worker_uuid,
        owner_id=row[6],
        hostname=row[7],
        pid=row[8],
        start=_aware(row[9]),
        last_seen=_aware(row[10]),
    )
    return worker, run


def task_read(*, user: User, run_uuid: str, number: int) -> dict[str, Any] | None:
    """Task `number` of a visible run as `id, task, percent_completed, status`, in one query joined on
    the run's uuid; None when the run is not visible or the task row does not exist yet."""
    owned = "" if user.is_admin else " AND r.owner_id = %s"
    sql = (
        f"SELECT t.id, t.task, t.percent_completed, t.status FROM {Task._meta.db_table} t "
        f"JOIN {Run._meta.db_table} r ON r.id = t.run_id WHERE r.uuid = %s AND t.task = %s{owned}"
    )
    params: list[Any] = [run_uuid, number, *([] if user.is_admin else [user.pk])]
    with prepared_cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    return {"id": row[0], "task": row[1], "percent_completed": row[2], "status": row[3]}


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
