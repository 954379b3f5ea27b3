"""Writes: runs, workers, race-free task hand-out with leases, updates, restarts."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from coordinator.models import User
from farm.conf import lease_seconds, progress_interval
from farm.errors import LeaseLostError, TaskNotFoundError, WorkerExistsError
from farm.models import Run, Task, Worker
from farm.selectors import RunCounts, run_counts
from progress.services import progress_publish

# Worker.last_seen is refreshed at most this often (seconds): one UPDATE saved on most requests.
LAST_SEEN_RESOLUTION = 5


def run_topic(run: Run) -> str:
    return f"run:{run.uuid}"


# When this server process last published a `msg` for each run (monotonic seconds).
_last_msg: dict[int, float] = {}


def _msg_due(run: Run, force: bool) -> bool:
    # Hundreds of claims and updates a second would each cost a progress event (database rows and a
    # channel-layer send) plus a count query; live pages need a few updates a second, not every one.
    now = time.monotonic()
    if not force and now - _last_msg.get(run.pk, -1e9) < progress_interval():
        return False
    if len(_last_msg) > 10_000:
        _last_msg.clear()
    _last_msg[run.pk] = now
    return True


def _counter_exhausted(run: Run) -> bool:
    """Whether every number was handed out; then also lock the run row, so that of two transactions
    finishing the last tasks at once the second counts after the first committed and one of them
    sees the run complete (each alone would miss the other's uncommitted rows)."""
    rows = Run.objects.filter(pk=run.pk, next_task=F("num_tasks"))
    if connection.features.has_select_for_update:
        rows = rows.select_for_update()
    return rows.values_list("id", flat=True).first() is not None


def _publish_counts(run: Run, text: str, *, maybe_ended: bool = False, force: bool = False) -> None:
    """Publish the run's counts (computed once) as `msg` (at most every FARM_PROGRESS_INTERVAL per
    process), and `end` with the final counts when a task just finished and none is left."""
    due = _msg_due(run, force)
    if maybe_ended and not _counter_exhausted(run):
        maybe_ended = False  # tasks were never handed out yet: the run cannot be finished
    if not due and not maybe_ended:
        return
    counts = run_counts(run=run)
    state = counts.as_state()
    ended = maybe_ended and counts.num_done == counts.num_tasks
    if due or ended:
        progress_publish(topic=run_topic(run), kind="msg", text=text, state=state, owner_id=run.owner_id)
    if ended:
        progress_publish(topic=run_topic(run), kind="end", text="", state=state, owner_id=run.owner_id)


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
    _publish_counts(run, f"restarted {changed} tasks", force=True)
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


def _claimable(cutoff: datetime) -> Q:
    """Waiting rows, and computing rows whose worker has been silent past the lease."""
    return Q(status=Task.Status.WAITING) | Q(status=Task.Status.COMPUTING, updated__lt=cutoff)


def _claim_existing(run: Run, worker: Worker, limit: int, now: datetime) -> int:
    """Claim up to `limit` existing rows (waiting, or lease expired), lowest numbers first.

    On PostgreSQL the candidate rows are locked with SKIP LOCKED, so concurrent claimers each
    take different rows without waiting for each other; everywhere the UPDATE repeats the
    condition it selected on, so a row another transaction took in between is not taken again.
    """
    cutoff = now - timedelta(seconds=lease_seconds())
    rows = Task.objects.filter(_claimable(cutoff), run=run).order_by("task")
    if connection.features.has_select_for_update_skip_locked:
        rows = rows.select_for_update(skip_locked=True)
    ids = list(rows.values_list("id", flat=True)[:limit])
    if not ids:
        return 0
    return Task.objects.filter(_claimable(cutoff), pk__in=ids).update(
        status=Task.Status.COMPUTING, worker=worker, started=now, updated=now
    )


def _claim_fresh(run: Run, worker: Worker, limit: int, now: datetime) -> int:
    """Take up to `limit` never-handed-out numbers from the run's counter and create their rows.

    The counter row is locked only for the rest of this short transaction. A number already
    materialised out of order (a GET/PUT on it) conflicts on the unique (run, task) and is
    skipped by the INSERT; a waiting row of that kind goes out through `_claim_existing`.
    Returns how many numbers were taken from the counter.
    """
    if run.next_task >= run.num_tasks:
        return 0  # already exhausted when the run was read (the counter only grows): no lock needed
    locked = Run.objects.filter(pk=run.pk)
    if connection.features.has_select_for_update:
        locked = locked.select_for_update()
    current = locked.values_list("next_task", "num_tasks").first()
    if current is None:
        return 0
    start, num_tasks = current
    end = min(start + limit, num_tasks)
    if start >= end:
        return 0
    Run.objects.filter(pk=run.pk).update(next_task=end)
    Task.objects.bulk_create(
        [Task(run=run, task=number, status=Task.Status.COMPUTING, worker=worker, started=now, updated=now)
         for number in range(start, end)],
        ignore_conflicts=True,
    )
    return end - start


@transaction.atomic
def tasks_claim(*, run: Run, worker: Worker, limit: int = 1) -> list[Task]:
    """Hand up to `limit` tasks to `worker`, each to no other worker: waiting or expired, then fresh."""
    now = timezone.now()
    expected = _claim_existing(run, worker, limit, now)
    mine = Task.objects.filter(run=run, worker=worker, started=now, status=Task.Status.COMPUTING)
    tasks: list[Task] = []
    while True:
        taken = _claim_fresh(run, worker, limit - expected, now) if expected < limit else 0
        expected += taken
        tasks = list(mine.order_by("task"))
        # Only numbers materialised out of order make the INSERT skip some; then take more.
        if len(tasks) >= expected or taken == 0:
            break
        expected = len(tasks)
    if worker.last_seen < now - timedelta(seconds=LAST_SEEN_RESOLUTION):
        Worker.objects.filter(pk=worker.pk).update(last_seen=now)
    if tasks:
        numbers = ", ".join(str(t.task) for t in tasks[:10])
        _publish_counts(run, f"{worker.hostname}:{worker.pid} took task {numbers}")
    return tasks


def _materialise(run: Run, number: int) -> Task:
    """Create the waiting row of a task number nobody touched yet (the seed does so on GET/PUT)."""
    if number >= run.next_task:
        # When it is the counter's next number, take it from the counter first: the run row is
        # then locked before the task row is inserted, the order hand-out uses, so the two can
        # never deadlock; numbers further ahead are skipped by hand-out's INSERT … ON CONFLICT.
        Run.objects.filter(pk=run.pk, next_task=number).update(next_task=F("next_task") + 1)
    try:
        with transaction.atomic():
            return Task.objects.create(run=run, task=number, status=Task.Status.WAITING)
    except IntegrityError:  # created concurrently
        return Task.objects.get(run=run, task=number)


def task_get_or_materialise(*, run: Run, number: int) -> Task:
    """Read task `number`; an in-range number never handed out becomes a waiting row."""
    if number < 0 or number >= run.num_tasks:
        raise TaskNotFoundError()
    task = Task.objects.filter(run=run, task=number).first()
    if task is not None:
        return task
    with transaction.atomic():
        return _materialise(run, number)


@dataclass(frozen=True)
class TaskChange:
    percent_completed: float | None = None
    status: str | None = None


@transaction.atomic
def task_update(*, run: Run, number: int, change: TaskChange, worker_uuid: str | None = None) -> Task:
    """Apply a worker's PUT; refused when the task is now computing for another worker."""
    if number < 0 or number >= run.num_tasks:
        raise TaskNotFoundError()
    locked = Task.objects.select_for_update(of=("self",)).select_related("worker").filter(run=run, task=number)
    task = locked.first()
    if task is None:
        _materialise(run, number)
        task = locked.get()
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
    holder = task.worker
    if worker_uuid and holder is not None and holder.uuid == worker_uuid \
            and holder.last_seen < now - timedelta(seconds=LAST_SEEN_RESOLUTION):
        Worker.objects.filter(pk=holder.pk).update(last_seen=now)
    finished = not was_done and task.status == Task.Status.DONE
    label = f"task {number}: {task.status} {task.percent_completed:g}%"
    _publish_counts(run, label, maybe_ended=finished)
    return task


@transaction.atomic
def tasks_complete(*, run: Run, worker: Worker, numbers: list[int]) -> list[int]:
    """Mark several tasks held by `worker` done at 100%; returns the numbers completed."""
    numbers = sorted(set(numbers))
    now = timezone.now()
    changed = Task.objects.filter(run=run, worker=worker, status=Task.Status.COMPUTING, task__in=numbers).update(
        status=Task.Status.DONE, percent_completed=100.0, updated=now
    )
    if changed == len(numbers):
        done = list(numbers)
    else:  # some were not this worker's: report exactly which ones were completed now
        done = sorted(Task.objects.filter(run=run, worker=worker, status=Task.Status.DONE, updated=now,
                                          task__in=numbers).values_list("task", flat=True))
    if worker.last_seen < now - timedelta(seconds=LAST_SEEN_RESOLUTION):
        Worker.objects.filter(pk=worker.pk).update(last_seen=now)
    if done:
        _publish_counts(run, f"{worker.hostname}:{worker.pid} completed {len(done)} tasks", maybe_ended=True)
    return done


@transaction.atomic
def leases_expire() -> int:
    """Put every computing task whose worker was silent past the lease back to waiting (a sweep;
    hand-out also takes such tasks over by itself)."""
    cutoff = timezone.now() - timedelta(seconds=lease_seconds())
    expired = Task.objects.filter(status=Task.Status.COMPUTING, updated__lt=cutoff)
    runs = list(Run.objects.filter(pk__in=expired.values("run_id")).distinct())
    changed = expired.update(status=Task.Status.WAITING, worker=None)
    for run in runs:
        _publish_counts(run, "expired leases returned to waiting", force=True)
    return changed
