"""Writes: runs, workers, race-free task hand-out with leases, updates, restarts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from coordinator.models import User
from farm.conf import lease_seconds
from farm.errors import LeaseLostError, TaskNotFoundError, WorkerExistsError
from farm.models import Run, Task, Worker
from farm.selectors import RunCounts, run_counts
from progress.services import progress_publish


def run_topic(run: Run) -> str:
    return f"run:{run.uuid}"


def _publish_counts(run: Run, text: str, *, ended_now: bool = False) -> RunCounts:
    """Publish the run's counts (computed once) as `msg`, plus `end` when the last task just finished."""
    counts = run_counts(run=run)
    state = counts.as_state()
    progress_publish(topic=run_topic(run), kind="msg", text=text, state=state, owner_id=run.owner_id)
    if ended_now and counts.num_done == counts.num_tasks:
        progress_publish(topic=run_topic(run), kind="end", text="", state=state, owner_id=run.owner_id)
    return counts


@transaction.atomic
def run_create(*, owner: User, num_tasks: int) -> Run:
    """Create a run of `num_tasks` tasks in constant time (no task rows up front)."""
    run = Run.objects.create(owner=owner, num_tasks=num_tasks)
    progress_publish(
        topic=run_topic(run), kind="new", text=f"run {run.uuid} ({num_tasks} tasks)",
        state=RunCounts(num_tasks, 0, 0, 0, 0.0).as_state(), owner_id=owner.pk,
    )
    return run


@transaction.atomic
def run_delete(*, run: Run) -> None:
    """Delete a run and its tasks."""
    progress_publish(topic=run_topic(run), kind="end", text="run deleted", owner_id=run.owner_id)
    Task.objects.filter(run=run).delete()
    run.delete()


@transaction.atomic
def run_restart(*, run: Run, everything: bool) -> int:
    """Put tasks back to waiting: those below 100% (keeping their percentage), or all of them at 0%."""
    tasks = Task.objects.filter(run=run)
    now = timezone.now()
    if everything:
        changed = tasks.update(status=Task.Status.WAITING, percent_completed=0.0, worker=None, updated=now)
    else:
        changed = tasks.filter(percent_completed__lt=100).update(
            status=Task.Status.WAITING, worker=None, updated=now
        )
    _publish_counts(run, f"restarted {changed} tasks")
    return changed


@transaction.atomic
def worker_register(*, owner: User, uuid: str, hostname: str, pid: int) -> Worker:
    """Register a worker process; a uuid already in use is a conflict."""
    if Worker.objects.filter(uuid=uuid).exists():
        raise WorkerExistsError()
    try:
        with transaction.atomic():
            return Worker.objects.create(owner=owner, uuid=uuid, hostname=hostname, pid=pid)
    except IntegrityError as exc:  # a concurrent registration of the same uuid
        raise WorkerExistsError() from exc


def worker_touch(*, worker_id: int) -> None:
    """Record that the worker is alive."""
    Worker.objects.filter(pk=worker_id).update(last_seen=timezone.now())


def _claim_existing(run: Run, worker: Worker, limit: int, now: datetime) -> list[int]:
    """Claim up to `limit` waiting rows, then rows whose lease expired; returns their ids.

    On PostgreSQL the candidate rows are locked with SKIP LOCKED, so concurrent claimers each
    take different rows without waiting for each other; everywhere the UPDATE repeats the status
    (and, for expired leases, the last sign of life) it read, so a row another transaction took
    in between is simply not counted as ours.
    """
    claimed: list[int] = []
    cutoff = now - timedelta(seconds=lease_seconds())
    candidates_for = (
        (Q(status=Task.Status.WAITING), Q(status=Task.Status.WAITING), "task"),
        (Q(status=Task.Status.COMPUTING, updated__lt=cutoff), Q(status=Task.Status.COMPUTING, updated__lt=cutoff),
         "updated"),
    )
    for select, guard, order in candidates_for:
        want = limit - len(claimed)
        if want <= 0:
            break
        rows = Task.objects.filter(select, run=run).order_by(order)
        if connection.features.has_select_for_update_skip_locked:
            rows = rows.select_for_update(skip_locked=True)
        ids = list(rows.values_list("id", flat=True)[:want])
        if not ids:
            continue
        changed = Task.objects.filter(guard, pk__in=ids).update(
            status=Task.Status.COMPUTING, worker=worker, started=now, updated=now
        )
        if changed == len(ids):
            claimed += ids
        elif changed:  # some rows were taken in between: keep only those that are now ours
            claimed += Task.objects.filter(pk__in=ids, worker=worker, started=now).values_list("id", flat=True)
    return claimed


def _claim_fresh(run: Run, worker: Worker, limit: int, now: datetime) -> list[int]:
    """Take up to `limit` never-handed-out numbers from the run's counter and create their rows.

    The counter row is locked only for this short transaction; numbers already materialised out
    of order (by a GET/PUT on them) are skipped: they exist as waiting rows and are handed out by
    `_claim_existing`.
    """
    claimed: list[int] = []
    while len(claimed) < limit:
        locked = Run.objects.filter(pk=run.pk)
        if connection.features.has_select_for_update:
            locked = locked.select_for_update()
        current = locked.values_list("next_task", "num_tasks").first()
        if current is None:
            break
        start, num_tasks = current
        end = min(start + limit - len(claimed), num_tasks)
        if start >= end:
            break
        Run.objects.filter(pk=run.pk).update(next_task=end)
        taken = set(
            Task.objects.filter(run=run, task__gte=start, task__lt=end).values_list("task", flat=True)
        )
        new_rows = [
            Task(run=run, task=number, status=Task.Status.COMPUTING, worker=worker, started=now, updated=now)
            for number in range(start, end) if number not in taken
        ]
        created = Task.objects.bulk_create(new_rows)
        if created and created[0].pk is None:  # backends that cannot return ids from bulk inserts
            claimed.extend(Task.objects.filter(run=run, task__in=[t.task for t in created]).values_list("id", flat=True))
        else:
            claimed.extend(t.pk for t in created)
    return claimed


@transaction.atomic
def tasks_claim(*, run: Run, worker: Worker, limit: int = 1) -> list[Task]:
    """Hand up to `limit` tasks to `worker`, each to no other worker: waiting, expired, then fresh."""
    now = timezone.now()
    ids = _claim_existing(run, worker, limit, now)
    if len(ids) < limit:
        ids += _claim_fresh(run, worker, limit - len(ids), now)
    Worker.objects.filter(pk=worker.pk).update(last_seen=now)
    tasks = list(Task.objects.filter(pk__in=ids).order_by("task"))
    if tasks:
        numbers = ", ".join(str(t.task) for t in tasks[:10])
        _publish_counts(run, f"{worker.hostname}:{worker.pid} took task {numbers}")
    return tasks


def _task_row(run: Run, number: int) -> Task:
    """The row of task `number`, created as waiting when it was never touched (as the seed does)."""
    if number < 0 or number >= run.num_tasks:
        raise TaskNotFoundError()
    task = Task.objects.filter(run=run, task=number).first()
    if task is not None:
        return task
    try:
        with transaction.atomic():
            task = Task.objects.create(run=run, task=number, status=Task.Status.WAITING)
    except IntegrityError:  # created concurrently
        return Task.objects.get(run=run, task=number)
    # Keep the counter dense when the number touched is the next one anyway.
    Run.objects.filter(pk=run.pk, next_task=number).update(next_task=F("next_task") + 1)
    return task


@transaction.atomic
def task_get_or_materialise(*, run: Run, number: int) -> Task:
    """Read task `number`; an in-range number never handed out becomes a waiting row."""
    return _task_row(run, number)


@dataclass(frozen=True)
class TaskChange:
    percent_completed: float | None = None
    status: str | None = None


@transaction.atomic
def task_update(*, run: Run, number: int, change: TaskChange, worker_uuid: str | None = None) -> Task:
    """Apply a worker's PUT; refused when the task is now computing for another worker."""
    _task_row(run, number)
    task = Task.objects.select_for_update(of=("self",)).select_related("worker").get(run=run, task=number)
    now = timezone.now()
    if worker_uuid and task.status == Task.Status.COMPUTING and task.worker is not None \
            and task.worker.uuid != worker_uuid:
        raise LeaseLostError(extra={"task": number})
    was_done = task.status == Task.Status.DONE
    fields = ["updated"]
    task.updated = now
    if change.percent_completed is not None:
        task.percent_completed = change.percent_completed
        fields.append("percent_completed")
    if change.status is not None:
        task.status = change.status
        fields.append("status")
    task.save(update_fields=fields)
    if worker_uuid:
        Worker.objects.filter(uuid=worker_uuid).update(last_seen=now)
    ended = not was_done and task.status == Task.Status.DONE
    label = f"task {number}: {task.status} {task.percent_completed:g}%"
    _publish_counts(run, label, ended_now=ended)
    return task


@transaction.atomic
def tasks_complete(*, run: Run, worker: Worker, numbers: list[int]) -> list[int]:
    """Mark several tasks held by `worker` done at 100%; returns the numbers completed."""
    now = timezone.now()
    held = Task.objects.filter(run=run, worker=worker, status=Task.Status.COMPUTING, task__in=numbers)
    done = sorted(held.values_list("task", flat=True))
    if done:
        Task.objects.filter(run=run, worker=worker, status=Task.Status.COMPUTING, task__in=done).update(
            status=Task.Status.DONE, percent_completed=100.0, updated=now
        )
    Worker.objects.filter(pk=worker.pk).update(last_seen=now)
    if done:
        _publish_counts(run, f"{worker.hostname}:{worker.pid} completed {len(done)} tasks", ended_now=True)
    return done
