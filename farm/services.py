"""Writes: runs and their controls, workers, task hand-out with leases and attempts, updates, restarts.

Lock order. Hand-out, controls, materialisation and the lease sweep lock the run row first and then
never wait for a task row (they take task rows with SKIP LOCKED). Every other write locks its task
rows first, and the run row last and only when it may have ended the run (`_settle`: the counter
has handed out every number). The run's progress topic (`progress_publish`) is always locked last.
So a run's `end` is sent by whoever finished its last task, under the run's lock, and no `msg`
follows it: a trailing window locks the run row and sends nothing for a finished run, and a
progress update publishes only while its task is open.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from coordinator.models import User
from coordinator.services import audit_record
from farm import metrics, throttle
from farm.conf import max_attempts
from farm.errors import LeaseLostError, RunNotFoundError, TaskNotFoundError, WorkerExistsError
from farm.models import Run, Task, Worker
from farm.selectors import RunCounts, lease_cutoff, run_counts
from progress.services import progress_publish

# Worker.last_seen is refreshed at most this often (seconds): most requests write no worker row.
LAST_SEEN_RESOLUTION = 5
OPEN = (Task.Status.WAITING, Task.Status.COMPUTING)


def run_topic(run: Run) -> str:
    return f"run:{run.uuid}"


def _locked_run(run_id: int) -> Run:
    """The run row, locked until the transaction ends (the first lock of every run-wide write)."""
    run = Run.objects.select_for_update(of=("self",)).filter(pk=run_id).first()
    if run is None:
        raise RunNotFoundError()  # deleted meanwhile
    return run


def _run_finished(run: Run) -> bool:
    """Nothing of the run is left to do: every number was handed out and no row waits or computes.
    Two EXISTS, each answered by its partial index, rather than counting the run's rows."""
    if run.next_task < run.num_tasks:
        return False
    tasks = Task.objects.filter(run=run)
    return not tasks.filter(status=Task.Status.WAITING).exists() and not (
        tasks.filter(status=Task.Status.COMPUTING).exists()
    )


def _counts(run: Run) -> RunCounts:
    """The run's counts; how long they took widens the run's event window (`throttle.count_took`)."""
    started = time.perf_counter()
    counts = run_counts(run=run)
    throttle.count_took(run.pk, time.perf_counter() - started)
    return counts


def _publish_msg(run: Run, text: str, counts: RunCounts | None = None) -> None:
    counts = counts or _counts(run)
    progress_publish(topic=run_topic(run), kind="msg", text=text, state=counts.as_state(), owner_id=run.owner_id)


def _settle(run: Run, text: str) -> None:
    """After a write that finished, failed or reset tasks of `run` (its task rows locked, not the
    run row): the `end` when nothing is left, else a throttled `msg`. The counter is read fresh; while
    it has numbers left the run cannot have ended, and whoever finishes those settles again."""
    counter = Run.objects.filter(pk=run.pk).values_list("next_task", "num_tasks").first()
    if counter is None:
        return  # deleted meanwhile
    if counter[0] < counter[1]:
        if throttle.msg_due(run.pk, False, text):
            _publish_msg(run, text)
        return
    _publish_after_finishing(_locked_run(run.pk), text)


def _publish_after_finishing(run: Run, text: str) -> None:
    """Under the run's lock, after tasks finished, failed or went back: the final `msg` and the
    `end` when nothing is left, else a throttled `msg`."""
    if _run_finished(run):
        throttle.forget(run.pk)
        counts = _counts(run)
        _publish_msg(run, text, counts)
        failed = counts.num_failed
        progress_publish(
            topic=run_topic(run),
            kind="end",
            text=f"{failed} tasks failed" if failed else "",
            state=counts.as_state(),
            owner_id=run.owner_id,
        )
    elif throttle.msg_due(run.pk, False, text):
        _publish_msg(run, text)


def _publish_trailing(run_id: int, text: str) -> None:
    """The `msg` sent when a throttled window closes; nothing for a run that ended or was deleted."""
    with transaction.atomic():
        try:
            run = _locked_run(run_id)
        except RunNotFoundError:
            return
        if not _run_finished(run):
            _publish_msg(run, text)


throttle.set_publisher(_publish_trailing)


def _touch_worker(worker: Worker, now: datetime) -> None:
    """Refresh the worker's sign of life, at most every LAST_SEEN_RESOLUTION seconds."""
    stale = now - timedelta(seconds=LAST_SEEN_RESOLUTION)
    if worker.last_seen < stale:
        Worker.objects.filter(pk=worker.pk, last_seen__lt=stale).update(last_seen=now)
        worker.last_seen = now


def _credit(worker_id: int | None, *, done: int = 0, failed: int = 0, seconds: float = 0.0) -> None:
    """Add finished tasks to the worker's running totals (done, failed, and the hand-out-to-finish
    seconds of those done) in one update."""
    if worker_id is not None and (done or failed):
        Worker.objects.filter(pk=worker_id).update(
            tasks_done=F("tasks_done") + done,
            tasks_failed=F("tasks_failed") + failed,
            done_seconds=F("done_seconds") + seconds,
        )


def _seconds_since(started: datetime | None, now: datetime) -> float:
    return max(0.0, (now - started).total_seconds()) if started is not None else 0.0


@transaction.atomic
def run_create(
    *, owner: User, num_tasks: int, name: str = "", labels: list[str] | None = None, max_computing: int | None = None
) -> Run:
    """Create a run of `num_tasks` tasks in constant time (no task rows up front)."""
    run = Run.objects.create(
        owner=owner, num_tasks=num_tasks, name=name, labels=list(labels or []), max_computing=max_computing
    )
    progress_publish(
        topic=run_topic(run),
        kind="new",
        text=name or f"run {run.uuid} ({num_tasks} tasks)",
        state=RunCounts(num_tasks, 0, 0, 0, 0, 0.0).as_state(),
        owner_id=owner.pk,
    )
    return run


@dataclass(frozen=True)
class RunControls:
    """A change of a run's controls; None leaves a control as it is."""

    name: str | None = None
    labels: list[str] | None = None
    max_computing: int | None = None
    clear_max_computing: bool = False
    paused: bool | None = None


@transaction.atomic
def run_control(*, run: Run, controls: RunControls) -> Run:
    """Rename, relabel, limit, pause or resume a run; takes effect at the next hand-out."""
    locked = _locked_run(run.pk)
    fields: list[str] = []
    if controls.name is not None:
        locked.name = controls.name
        fields.append("name")
    if controls.labels is not None:
        locked.labels = list(controls.labels)
        fields.append("labels")
    if controls.clear_max_computing or controls.max_computing is not None:
        locked.max_computing = None if controls.clear_max_computing else controls.max_computing
        fields.append("max_computing")
    resumed = controls.paused is False and locked.paused
    if controls.paused is not None:
        locked.paused = controls.paused
        fields.append("paused")
    if fields:
        locked.save(update_fields=fields)
        audit_record(action="run.control", target=locked, after={f: getattr(locked, f) for f in fields})
    if controls.paused is not None:
        _publish_msg(locked, "paused" if locked.paused else "resumed" if resumed else "running")
    return locked


@transaction.atomic
def run_delete(*, run: Run) -> None:
    """Delete a run and its tasks. A hand-out holding the run row makes the delete wait; the rows
    it inserted go too (the database's ON DELETE CASCADE, migration 0006)."""
    throttle.forget(run.pk)
    topic, owner_id = run_topic(run), run.owner_id
    audit_record(action="run.delete", target=run)
    Run.objects.filter(pk=run.pk).delete()
    progress_publish(topic=topic, kind="end", text="run deleted", owner_id=owner_id)


class Restart:
    """What a restart puts back to waiting."""

    INCOMPLETE = "incomplete"  # below 100% (the seed's rule) or lapsed, but neither live nor failed
    FAILED = "failed"
    ALL = "all"  # every task, at 0% (the seed's `all=True`)


@transaction.atomic
def run_restart(*, run: Run, what: str) -> int:
    """Put tasks back to waiting; tasks live workers are computing now are spared, except by ALL."""
    now = timezone.now()
    tasks = Task.objects.filter(run=run)
    back: dict[str, Any] = {"status": Task.Status.WAITING, "worker": None, "updated": now}
    if what == Restart.ALL:
        changed = tasks.update(**back, percent_completed=0.0, attempts=0, failure="")
    elif what == Restart.FAILED:
        changed = tasks.filter(status=Task.Status.FAILED).update(**back, attempts=0, failure="")
    elif what == Restart.INCOMPLETE:
        cutoff = lease_cutoff(now)
        lapsed = tasks.filter(status=Task.Status.COMPUTING, updated__lt=cutoff)
        below = tasks.filter(percent_completed__lt=100).exclude(status=Task.Status.FAILED)
        spared = Q(status=Task.Status.COMPUTING, updated__gte=cutoff)
        changed = (lapsed | below.exclude(spared)).update(**back)
    else:
        raise ValueError(f"unknown restart {what!r}")
    audit_record(action="run.restart", target=run, after={"what": what, "tasks": changed})
    _publish_msg(_locked_run(run.pk), f"restarted {changed} tasks")
    return changed


def worker_register(*, owner: User, uuid: str, hostname: str, pid: int) -> Worker:
    """Register a worker process; a uuid already in use is a conflict."""
    try:
        with transaction.atomic():
            return Worker.objects.create(owner=owner, uuid=uuid, hostname=hostname, pid=pid)
    except IntegrityError as exc:
        raise WorkerExistsError() from exc


def _unlocked(tasks: QuerySet[Task], limit: int) -> list[Task]:
    """Up to `limit` of `tasks`, lowest numbers first, locked for this transaction; rows another
    transaction holds are skipped (PostgreSQL; SQLite's one writer never meets a locked row)."""
    return list(tasks.select_for_update(skip_locked=True, of=("self",)).order_by("task")[:limit])


def _fail_exhausted(tasks: list[Task]) -> list[Task]:
    """Of lapsed `tasks` (locked), those handed out FARM_MAX_ATTEMPTS times become failed, never
    handed out again; returns the others."""
    exhausted = [task for task in tasks if task.attempts >= max_attempts()]
    if exhausted:
        Task.objects.filter(pk__in=[task.pk for task in exhausted]).update(
            status=Task.Status.FAILED, failure=f"lease lapsed {max_attempts()} times"
        )
        for holder, count in Counter(task.worker_id for task in exhausted).items():
            _credit(holder, failed=count)
    return [task for task in tasks if task.attempts < max_attempts()]


def _claim(run: Run, worker: Worker, limit: int, now: datetime) -> list[Task]:
    """Under the run's lock: waiting rows first, then rows whose lease lapsed, then fresh numbers
    from the run's counter, within the run's `max_computing`."""
    cutoff = lease_cutoff(now)
    if run.paused:
        return []
    if run.max_computing is not None:
        live = Task.objects.filter(run=run, status=Task.Status.COMPUTING, updated__gte=cutoff).count()
        limit = min(limit, run.max_computing - live)
    if limit <= 0:
        return []
    run_tasks = Task.objects.filter(run=run)
    taken = _unlocked(run_tasks.filter(status=Task.Status.WAITING), limit)
    lapsed = run_tasks.filter(status=Task.Status.COMPUTING, updated__lt=cutoff)
    while len(taken) < limit and (found := _unlocked(lapsed, limit - len(taken))):
        metrics.leases_lapsed(len(found))
        retried = _fail_exhausted(found)
        taken += retried
        if len(retried) < len(found):
            _publish_after_finishing(run, "tasks failed after too many attempts")
    holding: dict[str, Any] = {"status": Task.Status.COMPUTING, "worker": worker, "started": now, "updated": now}
    if taken:
        Task.objects.filter(pk__in=[task.pk for task in taken]).update(**holding, attempts=F("attempts") + 1)
        for task in taken:
            task.status, task.worker, task.started, task.updated = Task.Status.COMPUTING, worker, now, now
            task.attempts += 1
    counter = run.next_task
    while len(taken) < limit and counter < run.num_tasks:
        high = min(counter + limit - len(taken), run.num_tasks)
        # Numbers above the counter that a GET or PUT materialised already have their row.
        touched = set(run_tasks.filter(task__gte=counter, task__lt=high).values_list("task", flat=True))
        fresh = [Task(run=run, task=n, attempts=1, **holding) for n in range(counter, high) if n not in touched]
        taken += Task.objects.bulk_create(fresh)
        counter = high
    if counter != run.next_task:
        Run.objects.filter(pk=run.pk).update(next_task=counter)
        run.next_task = counter
    return sorted(taken, key=lambda task: task.task)


def tasks_claim(*, run: Run, worker: Worker, limit: int = 1) -> list[Task]:
    """Hand up to `limit` tasks to `worker`, each to no other worker (empty: none left, the run is
    paused or at its `max_computing`)."""
    now = timezone.now()
    with transaction.atomic():
        locked = _locked_run(run.pk)
        tasks = _claim(locked, worker, limit, now)
        metrics.tasks_claimed(len(tasks))
        if tasks:
            text = f"{worker.hostname}:{worker.pid} took task {', '.join(str(t.task) for t in tasks[:10])}"
            if throttle.msg_due(locked.pk, False, text):
                _publish_msg(locked, text)
    # After the commit: holding the run row while waiting for the worker's row could deadlock with
    # that worker's own completion, which holds its worker row and then wants the run row.
    _touch_worker(worker, now)
    return tasks


def _materialise(run: Run, number: int) -> Task:
    """The waiting row of a task number nobody touched yet (the seed creates it on GET/PUT), under
    the run's lock; the counter's next number is taken from the counter."""
    locked = _locked_run(run.pk)
    if number == locked.next_task:
        Run.objects.filter(pk=run.pk).update(next_task=F("next_task") + 1)
    task, _ = Task.objects.get_or_create(run=locked, task=number)
    return task


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
def task_update(*, run: Run, number: int, change: TaskChange, sender: str | None = None) -> Task:
    """Apply a PUT. When the request names its worker (`sender`), a task computing for another
    worker is refused (its lease lapsed and it was handed out again: 409)."""
    if number < 0 or number >= run.num_tasks:
        raise TaskNotFoundError()
    rows = Task.objects.select_for_update(of=("self",)).select_related("worker").filter(run=run, task=number)
    task = rows.first()
    if task is None:
        _materialise(run, number)
        task = rows.get()
    holder = task.worker
    if sender and task.status == Task.Status.COMPUTING and holder is not None and holder.uuid != sender:
        raise LeaseLostError(extra={"task": number})
    now = timezone.now()
    was = task.status
    task.updated = now
    fields = ["updated"]
    if change.percent_completed is not None:
        task.percent_completed = change.percent_completed
        fields.append("percent_completed")
    if change.status is not None:
        if change.status != task.status and change.status in (Task.Status.DONE, Task.Status.FAILED):
            metrics.tasks_finished(change.status, 1)
        task.status = change.status
        fields.append("status")
    task.save(update_fields=fields)
    if was != task.status == Task.Status.DONE:
        _credit(task.worker_id, done=1, seconds=_seconds_since(task.started, now))
    elif was != task.status == Task.Status.FAILED:
        _credit(task.worker_id, failed=1)
    if holder is not None and holder.uuid == sender:
        _touch_worker(holder, now)
    text = f"task {number}: {task.status} {task.percent_completed:g}%"
    if change.status is not None:
        _settle(run, text)
    elif task.status in OPEN and throttle.msg_due(run.pk, False, text):
        # The task is open under this row's lock, so the run cannot have ended before this commits.
        _publish_msg(run, text)
    return task


def _finish_held(run: Run, worker: Worker, numbers: list[int], status: str, failure: str = "") -> list[int]:
    """Tasks among `numbers` computing for `worker` become `status`."""
    held = Task.objects.filter(run=run, worker=worker, status=Task.Status.COMPUTING, task__in=sorted(set(numbers)))
    ids, finished, started = [], [], []
    for pk, number, handed_out in held.select_for_update(of=("self",)).values_list("pk", "task", "started"):
        ids.append(pk)
        finished.append(number)
        started.append(handed_out)
    now = timezone.now()
    changes: dict[str, Any] = {"status": status, "updated": now}
    if status == Task.Status.DONE:
        changes["percent_completed"] = 100.0
    else:
        changes["failure"] = failure[:500]
    Task.objects.filter(pk__in=ids).update(**changes)
    metrics.tasks_finished(status, len(ids))
    if status == Task.Status.DONE:
        _credit(worker.pk, done=len(ids), seconds=sum(_seconds_since(at, now) for at in started))
    else:
        _credit(worker.pk, failed=len(ids))
    _touch_worker(worker, now)
    if finished:
        verb = "completed" if status == Task.Status.DONE else "failed"
        _settle(run, f"{worker.hostname}:{worker.pid} {verb} {len(finished)} tasks")
    return sorted(finished)


@transaction.atomic
def tasks_complete(*, run: Run, worker: Worker, numbers: list[int]) -> list[int]:
    """Mark the tasks among `numbers` that `worker` holds done at 100%; returns those numbers."""
    return _finish_held(run, worker, numbers, Task.Status.DONE)


@transaction.atomic
def tasks_fail(*, run: Run, worker: Worker, numbers: list[int], reason: str = "") -> list[int]:
    """Mark the tasks among `numbers` that `worker` holds failed (never handed out again unless an
    operator restarts the run's failed tasks); returns those numbers."""
    return _finish_held(run, worker, numbers, Task.Status.FAILED, reason or "reported failed")


def leases_expire() -> int:
    """The sweep: computing tasks whose lease lapsed go back to waiting, or fail after their last
    attempt, so a run's counts show them by themselves (hand-out also takes them over at once)."""
    cutoff = lease_cutoff(timezone.now())
    lapsed = Task.objects.filter(status=Task.Status.COMPUTING, updated__lt=cutoff)
    changed = 0
    for run_id in lapsed.order_by("run_id").values_list("run_id", flat=True).distinct():
        with transaction.atomic():
            try:
                run = _locked_run(run_id)
            except RunNotFoundError:
                continue
            found = _unlocked(lapsed.filter(run=run), 100_000)
            retried = [task.pk for task in _fail_exhausted(found)]
            Task.objects.filter(pk__in=retried).update(status=Task.Status.WAITING, worker=None)
            changed += len(found)
            metrics.leases_lapsed(len(found))
            _publish_after_finishing(run, "lapsed leases returned to waiting")
    return changed
