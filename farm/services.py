"""Writes: runs, workers, race-free task hand-out with leases, updates, restarts."""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from coordinator.db import prepared_cursor
from coordinator.models import User
from farm import throttle
from farm.conf import lease_seconds
from farm.errors import LeaseLostError, RunNotFoundError, TaskNotFoundError, WorkerExistsError, WorkerNotFoundError
from farm.models import Run, Task, Worker
from farm.selectors import RunCounts, run_counts, worker_and_run_get
from progress.services import progress_publish

# Worker.last_seen is refreshed at most this often (seconds): one UPDATE saved on most requests.
LAST_SEEN_RESOLUTION = 5


def run_topic(run: Run) -> str:
    return f"run:{run.uuid}"


def _publish_trailing(run_id: int, text: str) -> None:
    """The `msg` sent when a throttled window closes: the run's counts as they are then."""
    run = Run.objects.filter(pk=run_id).first()
    if run is None:
        return
    with transaction.atomic():
        progress_publish(
            topic=run_topic(run), kind="msg", text=text, state=_timed_counts(run).as_state(), owner_id=run.owner_id
        )


def _timed_counts(run: Run) -> RunCounts:
    """The run's counts; how long they took widens the run's event window (`throttle.count_took`)."""
    started = time.perf_counter()
    counts = run_counts(run=run)
    throttle.count_took(run.pk, time.perf_counter() - started)
    return counts


throttle.set_publisher(_publish_trailing)


# When this server process last refreshed each worker's `last_seen` (monotonic seconds).
_last_seen_sent: dict[int, float] = {}


def _touch_worker(worker_id: int, now: datetime, last_seen: datetime | None = None) -> None:
    """Refresh `Worker.last_seen` at most every LAST_SEEN_RESOLUTION seconds per worker and process
    (a guarded UPDATE, so processes racing on it write it once), instead of once per request."""
    tick = time.monotonic()
    if tick - _last_seen_sent.get(worker_id, -1e9) < LAST_SEEN_RESOLUTION:
        return
    if last_seen is not None and last_seen >= now - timedelta(seconds=LAST_SEEN_RESOLUTION):
        return
    if len(_last_seen_sent) > 10_000:
        _last_seen_sent.clear()
    _last_seen_sent[worker_id] = tick
    Worker.objects.filter(pk=worker_id, last_seen__lt=now - timedelta(seconds=LAST_SEEN_RESOLUTION)).update(
        last_seen=now
    )


def _counter_exhausted(run: Run) -> bool:
    """Whether every number was handed out; then also lock the run row, so that of two transactions
    finishing the last tasks at once the second counts after the first committed and one of them
    sees the run complete (each alone would miss the other's uncommitted rows)."""
    rows = Run.objects.filter(pk=run.pk, next_task=F("num_tasks"))
    if connection.features.has_select_for_update:
        rows = rows.select_for_update()
    return rows.values_list("id", flat=True).first() is not None


def _nothing_left(run: Run) -> bool:
    """Whether no task of a run whose counter is exhausted is waiting or computing, i.e. all are done,
    without counting: every number below the counter has its row (hand-out inserts the rows of the
    numbers it takes in the same statement), and the two partial indexes hold just the waiting and
    the computing rows. Counting a run's rows costs about 0.25 s per million on PostgreSQL here, and
    near the end of a run every finished task asks this."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT NOT EXISTS (SELECT 1 FROM {TASK} WHERE run_id = %s AND status = {WAITING}) "
            f"AND NOT EXISTS (SELECT 1 FROM {TASK} WHERE run_id = %s AND status = {COMPUTING})",
            [run.pk, run.pk],
        )
        row = cursor.fetchone()
    return bool(row and row[0])


def _publish_counts(
    run: Run, text: str, *, maybe_ended: bool = False, force: bool = False, due: bool | None = None
) -> None:
    """Publish the run's counts (computed once) as `msg` (at most every FARM_PROGRESS_INTERVAL per
    process), and `end` with the final counts when a task just finished and none is left."""
    if due is None:
        due = throttle.msg_due(run.pk, force, text)
    if maybe_ended and not _counter_exhausted(run):
        maybe_ended = False  # tasks were never handed out yet: the run cannot be finished
    if not due and not maybe_ended:
        return
    if not due and not _nothing_left(run):
        return  # a task finished, but others are still waiting or computing: no event, no count
    counts = _timed_counts(run)
    state = counts.as_state()
    ended = maybe_ended and counts.num_done == counts.num_tasks
    if due or ended:
        progress_publish(topic=run_topic(run), kind="msg", text=text, state=state, owner_id=run.owner_id)
    if ended:
        throttle.forget(run.pk)
        progress_publish(topic=run_topic(run), kind="end", text="", state=state, owner_id=run.owner_id)


def _numbers_left(finishing: bool) -> str:
    """A RETURNING column for a write that finishes tasks: whether the run's counter still has numbers
    to hand out, read under a share lock of the run row (PostgreSQL).

    The lock is what makes this one statement safe: it reads the latest committed counter, and the
    UPDATE that would hand out the last numbers waits until this write committed, so whoever then
    finishes those counts this write's rows done. Elsewhere (or not finishing): NULL, and
    `_publish_finished` reads the counter itself after the commit."""
    if finishing and connection.vendor == "postgresql":
        return f"(SELECT next_task < num_tasks FROM {RUN} WHERE id = {TASK}.run_id FOR SHARE)"
    return "NULL"


def _publish_finished(run_id: int, text: str, *, finished: bool, left: bool | None = None) -> None:
    """`_publish_counts` after a write that already committed, for callers that hold only the run id:
    the run row is read only when an event may go out (throttled `msg`, or the last task finished).

    `left`: the counter state the write itself read (`_numbers_left`), if it did. Otherwise the write
    committed before this reads the counter, so of two requests finishing the last tasks the later
    one to commit sees the other's row done (the count runs under the run row's lock)."""
    due = throttle.msg_due(run_id, False, text)
    if not due and not finished:
        return
    if not due and left:
        return  # numbers never handed out are left: not the end (whoever finishes them will check)
    if not due and left is None:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT next_task < num_tasks FROM {RUN} WHERE id = %s", [run_id])
            row = cursor.fetchone()
        if row is None or row[0]:
            return  # numbers never handed out are left: not the end (whoever finishes them will check)
    run = Run.objects.filter(pk=run_id).first()
    if run is None:
        return
    with transaction.atomic():
        _publish_counts(run, text, maybe_ended=finished, due=due)


@transaction.atomic
def run_create(*, owner: User, num_tasks: int) -> Run:
    """Create a run of `num_tasks` tasks in constant time (no task rows up front)."""
    run = Run.objects.create(owner=owner, num_tasks=num_tasks)
    progress_publish(
        topic=run_topic(run),
        kind="new",
        text=f"run {run.uuid} ({num_tasks} tasks)",
        state=RunCounts(num_tasks, 0, 0, 0, 0.0).as_state(),
        owner_id=owner.pk,
    )
    return run


@transaction.atomic
def run_delete(*, run: Run) -> None:
    """Delete a run and its tasks."""
    throttle.forget(run.pk)
    progress_publish(topic=run_topic(run), kind="end", text="run deleted", owner_id=run.owner_id)
    # Django's cascade deletes the tasks; the farm's `pre_delete` receiver (farm.apps) locks the run
    # row before that, so no hand-out can add a row behind the delete.
    run.delete()


@transaction.atomic
def run_restart(*, run: Run, everything: bool) -> int:
    """Put tasks back to waiting: those below 100% (keeping their percentage), or all of them at 0%."""
    tasks = Task.objects.filter(run=run)
    now = timezone.now()
    if everything:
        changed = tasks.update(status=Task.Status.WAITING, percent_completed=0.0, worker=None, updated=now)
    else:
        changed = tasks.filter(percent_completed__lt=100).update(status=Task.Status.WAITING, worker=None, updated=now)
    _publish_counts(run, f"restarted {changed} tasks", force=True)
    return changed


@transaction.atomic
def worker_register(*, owner: User, uuid: str, hostname: str, pid: int, token_id: str | None = None) -> Worker:
    """Register a worker process, with the id of the farm token it registered with (if any); a uuid
    already in use is a conflict."""
    if Worker.objects.filter(uuid=uuid).exists():
        raise WorkerExistsError()
    try:
        with transaction.atomic():
            return Worker.objects.create(owner=owner, uuid=uuid, hostname=hostname, pid=pid, token_id=token_id)
    except IntegrityError as exc:  # a concurrent registration of the same uuid
        raise WorkerExistsError() from exc


TASK = Task._meta.db_table
RUN = Run._meta.db_table
WORKER = Worker._meta.db_table


def _credit_worker(worker_id: int | None, finished: int) -> None:
    """Count `finished` tasks in `Worker.tasks_done` (a separate statement; PostgreSQL's hot paths
    do this inside their own statement)."""
    if worker_id is not None and finished:
        Worker.objects.filter(pk=worker_id).update(tasks_done=F("tasks_done") + finished)


# Statuses written into SQL as literals where a partial index's condition must be seen in the
# statement itself (a parameter would hide it from a prepared plan). Constants, never input.
WAITING, COMPUTING = (f"'{status.value}'" for status in (Task.Status.WAITING, Task.Status.COMPUTING))


@dataclass(frozen=True)
class ClaimedTask:
    """A task just handed out, as the API returns it (read back by the claiming statement itself)."""

    id: int
    task: int
    percent_completed: float
    status: str


def _dt(value: datetime) -> Any:
    # Raw SQL gets the datetime as the backend stores it (SQLite: ISO text in UTC, compared as text).
    return connection.ops.adapt_datetimefield_value(value)


def _claim_existing(run: Run, worker: Worker, limit: int, now: datetime) -> list[ClaimedTask]:
    """Claim up to `limit` existing rows (waiting, or lease expired), lowest numbers first, in one
    UPDATE … RETURNING (SQLite; PostgreSQL does this inside `_claim_pg`).

    The UPDATE repeats the condition it selected on, so a row another claimer took in between is not
    taken again (SQLite writes one statement at a time anyway). One statement: atomic without a
    transaction around it.
    """
    cutoff = _dt(now - timedelta(seconds=lease_seconds()))
    claimable = f"(status = {WAITING} OR (status = {COMPUTING} AND updated < %s))"
    # Each part by its own partial index (`farm_task_waiting`, `farm_task_computing`).
    candidates = (
        f"SELECT id FROM (SELECT id, task FROM (SELECT id, task FROM {TASK} WHERE run_id = %s "
        f"AND status = {WAITING} ORDER BY task LIMIT %s) UNION ALL SELECT id, task FROM (SELECT id, task "
        f"FROM {TASK} WHERE run_id = %s AND status = {COMPUTING} AND updated < %s ORDER BY task LIMIT %s)) "
        f"ORDER BY task LIMIT %s"
    )
    sql = (
        f"UPDATE {TASK} SET status = %s, worker_id = %s, started = %s, updated = %s "
        f"WHERE id IN ({candidates}) AND {claimable} RETURNING id, task, percent_completed, status"
    )
    stamp = _dt(now)
    params = [Task.Status.COMPUTING.value, worker.pk, stamp, stamp, run.pk, limit, run.pk, cutoff, limit, limit, cutoff]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [ClaimedTask(*row) for row in cursor.fetchall()]


def _claim_fresh(run: Run, worker: Worker, limit: int, now: datetime) -> tuple[int, list[ClaimedTask]]:
    """Take up to `limit` never-handed-out numbers from the run's counter and create their rows.

    The counter row is locked only for the rest of this short statement (PostgreSQL) or
    transaction (SQLite). A number already materialised out of order (a GET/PUT on it) conflicts
    on the unique (run, task) and is skipped by the INSERT; a waiting row of that kind goes out
    through `_claim_existing`. Returns how many numbers were taken from the counter, and the rows
    created.
    """
    if run.next_task >= run.num_tasks:
        return 0, []  # already exhausted when the run was read (the counter only grows): no lock needed
    stamp = _dt(now)
    computing = Task.Status.COMPUTING.value
    columns = "run_id, task, status, percent_completed, worker_id, started, updated"
    if connection.vendor == "postgresql":
        # One round trip: lock the counter and read its old value (FOR UPDATE returns the latest
        # committed value), advance it, and insert the numbers in between. The last row of the
        # result carries the count taken from the counter (none at all: it was exhausted).
        sql = (
            f"WITH old AS (SELECT id, next_task FROM {RUN} WHERE id = %s FOR UPDATE), "
            f"taken AS (UPDATE {RUN} r SET next_task = LEAST(r.next_task + %s, r.num_tasks) FROM old "
            f"WHERE r.id = old.id AND r.next_task < r.num_tasks RETURNING old.next_task AS lo, r.next_task AS hi), "
            f"ins AS (INSERT INTO {TASK} ({columns}) SELECT %s, g, %s, 0.0, %s, %s, %s "
            f"FROM taken, generate_series(taken.lo, taken.hi - 1) AS g ON CONFLICT DO NOTHING RETURNING id, task) "
            f"SELECT id, task, NULL FROM ins UNION ALL SELECT NULL, NULL, hi - lo FROM taken"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [run.pk, limit, run.pk, computing, worker.pk, stamp, stamp])
            rows = cursor.fetchall()
        taken = sum(int(row[2]) for row in rows if row[2] is not None)
        created = sorted(row[1] for row in rows if row[2] is None)
        ids = {row[1]: row[0] for row in rows if row[2] is None}
        return taken, [ClaimedTask(ids[n], n, 0.0, computing) for n in created]
    with connection.cursor() as cursor:
        # SQLite: `tasks_claim` holds an IMMEDIATE transaction (settings), so the write lock from its start.
        cursor.execute(f"SELECT next_task, num_tasks FROM {RUN} WHERE id = %s", [run.pk])
        current = cursor.fetchone()
        if current is None:
            return 0, []
        start, end = current[0], min(current[0] + limit, current[1])
        if start >= end:
            return 0, []
        cursor.execute(f"UPDATE {RUN} SET next_task = %s WHERE id = %s", [end, run.pk])
        cursor.execute(
            f"WITH RECURSIVE g(n) AS (SELECT %s UNION ALL SELECT n + 1 FROM g WHERE n + 1 < %s) "
            f"INSERT INTO {TASK} ({columns}) SELECT %s, n, %s, 0.0, %s, %s, %s FROM g WHERE true "
            f"ON CONFLICT DO NOTHING RETURNING id, task",
            [start, end, run.pk, computing, worker.pk, stamp, stamp],
        )
        rows = cursor.fetchall()
    return end - start, [ClaimedTask(row[0], row[1], 0.0, computing) for row in sorted(rows, key=lambda r: r[1])]


@dataclass(frozen=True)
class PgClaim:
    tasks: list[ClaimedTask]
    taken: int  # numbers taken from the counter
    run_id: int | None  # None: the run or the worker is not there (or not the user's)
    worker_id: int | None


def _claim_pg(*, run_uuid: str, worker_uuid: str, owner_id: int | None, limit: int, now: datetime) -> PgClaim:
    """`_claim_existing` then `_claim_fresh` for what it did not find, with the run and the worker
    looked up by uuid (and owner, unless None), in one PostgreSQL statement: one round trip per
    hand-out, `last_seen` included. Each part locks as it does alone: candidate task rows with SKIP
    LOCKED, then the run row (only when fresh numbers are needed and left), always in that order.

    Waiting rows and rows whose lease expired are looked for apart, each through the partial index
    that holds only such rows (`farm_task_waiting`, `farm_task_computing`): one condition with OR
    between them let the planner read every row of the run (finished ones too), a cost growing with
    the run's progress."""
    owned = "" if owner_id is None else " AND owner_id = %(owner)s"
    columns = "run_id, task, status, percent_completed, worker_id, started, updated"
    claimable = f"(status = {WAITING} OR (status = {COMPUTING} AND updated < %(cutoff)s))"
    sql = (
        f"WITH run_ AS (SELECT id FROM {RUN} WHERE uuid = %(run_uuid)s{owned}), "
        f"wk AS (SELECT id FROM {WORKER} WHERE uuid = %(worker_uuid)s{owned}), "
        # The worker's sign of life, written only when older than LAST_SEEN_RESOLUTION (a data-modifying
        # CTE runs whether or not it is read).
        f"seen AS (UPDATE {WORKER} SET last_seen = %(now)s WHERE id = (SELECT id FROM wk) "
        f"AND last_seen < %(stale)s RETURNING id), "
        f"waiting AS (SELECT t.id, t.task FROM {TASK} t, run_, wk WHERE t.run_id = run_.id "
        f"AND t.status = {WAITING} ORDER BY t.task LIMIT %(limit)s FOR UPDATE OF t SKIP LOCKED), "
        f"lapsed AS (SELECT t.id, t.task FROM {TASK} t, run_, wk WHERE t.run_id = run_.id "
        f"AND t.status = {COMPUTING} AND t.updated < %(cutoff)s ORDER BY t.task LIMIT %(limit)s "
        f"FOR UPDATE OF t SKIP LOCKED), "
        f"pick AS (SELECT id FROM (SELECT id, task FROM waiting UNION ALL SELECT id, task FROM lapsed) c "
        f"ORDER BY task LIMIT %(limit)s), "
        f"ex AS (UPDATE {TASK} SET status = %(computing)s, worker_id = (SELECT id FROM wk), started = %(now)s, "
        f"updated = %(now)s WHERE id IN (SELECT id FROM pick) AND {claimable} "
        f"RETURNING id, task, percent_completed, status), "
        f"want AS (SELECT %(limit)s::bigint - (SELECT count(*) FROM ex) AS n, wk.id AS worker_id FROM wk), "
        f"old AS (SELECT f.id, f.next_task FROM {RUN} f, run_, want WHERE f.id = run_.id AND want.n > 0 "
        f"AND f.next_task < f.num_tasks FOR UPDATE OF f), "
        f"taken AS (UPDATE {RUN} f SET next_task = LEAST(f.next_task + want.n, f.num_tasks) FROM old, want "
        f"WHERE f.id = old.id RETURNING f.id AS run_id, want.worker_id, old.next_task AS lo, f.next_task AS hi), "
        f"ins AS (INSERT INTO {TASK} ({columns}) SELECT taken.run_id, g, %(computing)s, 0.0, taken.worker_id, "
        f"%(now)s, %(now)s FROM taken, generate_series(taken.lo, taken.hi - 1) AS g ON CONFLICT DO NOTHING "
        f"RETURNING id, task, status) "
        f"SELECT 0, id, task, percent_completed, status FROM ex "
        f"UNION ALL SELECT 0, id, task, 0.0::float8, status FROM ins "
        f"UNION ALL SELECT 1, hi - lo, NULL, NULL, NULL FROM taken "
        f"UNION ALL SELECT 2, run_.id, wk.id, NULL, NULL FROM run_, wk"
    )
    params = {
        "computing": Task.Status.COMPUTING.value,
        "cutoff": _dt(now - timedelta(seconds=lease_seconds())),
        "now": _dt(now),
        "stale": _dt(now - timedelta(seconds=LAST_SEEN_RESOLUTION)),
        "run_uuid": run_uuid,
        "worker_uuid": worker_uuid,
        "owner": owner_id,
        "limit": limit,
    }
    with prepared_cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    tasks = [ClaimedTask(int(r[1]), int(r[2]), float(r[3]), str(r[4])) for r in rows if r[0] == 0]
    taken = sum(int(r[1]) for r in rows if r[0] == 1)
    meta = [r for r in rows if r[0] == 2]
    return PgClaim(tasks, taken, int(meta[0][1]) if meta else None, int(meta[0][2]) if meta else None)


def tasks_claim_by_uuid(*, user: User, run_uuid: str, worker_uuid: str, limit: int) -> list[ClaimedTask] | None:
    """The API's hand-out on PostgreSQL: run and worker found and tasks claimed in one round trip.
    None when the run or worker is not the user's (nothing claimed; the caller says which is missing)
    or on another database (the caller takes `tasks_claim`)."""
    if connection.vendor != "postgresql":
        return None
    now = timezone.now()
    claim = _claim_pg(
        run_uuid=run_uuid, worker_uuid=worker_uuid, owner_id=None if user.is_admin else user.pk, limit=limit, now=now
    )
    if claim.run_id is None or claim.worker_id is None:
        return None
    tasks = claim.tasks
    if claim.taken > 0 and len(tasks) < limit:
        # Numbers materialised out of order were skipped (or the counter ran out): take more the
        # usual way (rare: the full objects are read only here).
        run, worker = _run_and_worker_still_there(claim.run_id, claim.worker_id)
        tasks += tasks_claim(run=run, worker=worker, limit=limit - len(tasks))
        tasks.sort(key=lambda t: t.task)
        return tasks
    tasks.sort(key=lambda t: t.task)
    if tasks and throttle.msg_due(claim.run_id, False, f"took task {', '.join(str(t.task) for t in tasks[:10])}"):
        run, worker = _run_and_worker_still_there(claim.run_id, claim.worker_id)
        numbers = ", ".join(str(t.task) for t in tasks[:10])
        with transaction.atomic():
            _publish_counts(run, f"{worker.hostname}:{worker.pid} took task {numbers}", due=True)
    return tasks


def _run_and_worker_still_there(run_id: int, worker_id: int) -> tuple[Run, Worker]:
    """The run and worker of a claim that just committed, read again: either may have been deleted
    since (a run deleted while its workers claim), which is then the 404 of a missing one."""
    run = Run.objects.filter(pk=run_id).first()
    if run is None:
        raise RunNotFoundError()
    worker = Worker.objects.filter(pk=worker_id).first()
    if worker is None:
        raise WorkerNotFoundError()
    return run, worker


def tasks_claim_for(*, user: User, run_uuid: str, worker_uuid: str, limit: int) -> list[ClaimedTask]:
    """The API's hand-out by uuids. PostgreSQL: one round trip for lookup and hand-out; a missing run
    or worker and other databases take the lookup that says which one is missing (404), then the
    hand-out."""
    tasks = tasks_claim_by_uuid(user=user, run_uuid=run_uuid, worker_uuid=worker_uuid, limit=limit)
    if tasks is None:
        worker, run = worker_and_run_get(user=user, worker_uuid=worker_uuid, run_uuid=run_uuid)
        tasks = tasks_claim(run=run, worker=worker, limit=limit)
    if not tasks and not Run.objects.filter(uuid=run_uuid).exists():
        # The run was deleted while this claim waited for its row: say so (404), not "none left".
        raise RunNotFoundError()
    return tasks


def tasks_claim(*, run: Run, worker: Worker, limit: int = 1) -> list[ClaimedTask]:
    """Hand up to `limit` tasks to `worker`, each to no other worker: waiting or expired, then fresh.

    On PostgreSQL not one transaction: each statement is atomic by itself and hands out only what it
    took, so a failure in between leaves nothing half-claimed (and a transaction would only add round
    trips). On SQLite every write statement takes the database's single write lock, so the claim
    takes it once (an IMMEDIATE transaction) instead of once per statement: fewer waits under load.
    """
    now = timezone.now()
    with transaction.atomic() if connection.vendor == "sqlite" else nullcontext():
        if connection.vendor == "postgresql":
            claim = _claim_pg(run_uuid=run.uuid, worker_uuid=worker.uuid, owner_id=None, limit=limit, now=now)
            tasks, retry = claim.tasks, claim.taken > 0 and len(claim.tasks) < limit
        else:
            tasks, retry = _claim_existing(run, worker, limit, now), True
        while retry and len(tasks) < limit:
            taken, created = _claim_fresh(run, worker, limit - len(tasks), now)
            tasks += created
            # Only numbers materialised out of order make the INSERT skip some; then take more.
            if taken == 0 or len(created) == taken:
                break
    tasks.sort(key=lambda t: t.task)
    _touch_worker(worker.pk, now, worker.last_seen)
    if tasks:
        numbers = ", ".join(str(t.task) for t in tasks[:10])
        _publish_finished_or_due(run, f"{worker.hostname}:{worker.pid} took task {numbers}")
    return tasks


def _publish_finished_or_due(run: Run, text: str) -> None:
    # Hand-out never ends a run: only a throttled `msg` may be due.
    if throttle.msg_due(run.pk, False, text):
        with transaction.atomic():
            _publish_counts(run, text, due=True)


def _materialise(run: Run, number: int) -> Task:
    """Create the waiting row of a task number nobody touched yet (the seed does so on GET/PUT).

    The run row is locked first, the order hand-out uses (so the two can never deadlock), and must
    still be there: with no database-level foreign key, this is what keeps a run being deleted from
    getting a new row. When the number is the counter's next one, it is taken from the counter;
    numbers further ahead are skipped by hand-out's INSERT … ON CONFLICT."""
    next_task = Run.objects.select_for_update().filter(pk=run.pk).values_list("next_task", flat=True).first()
    if next_task is None:
        raise RunNotFoundError()  # deleted meanwhile
    if number == next_task:
        Run.objects.filter(pk=run.pk).update(next_task=F("next_task") + 1)
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


def task_update_held(*, user: User, run_uuid: str, number: int, change: TaskChange, worker_uuid: str) -> bool:
    """The common PUT in one guarded UPDATE: the task is computing for the worker that sends it (its
    cookie), in a run the user may change. Returns False, changing nothing, in every other case
    (unknown run or task, another holder, not computing), which `task_update` then decides.

    Being computing for this worker, the task cannot have been done before, so setting `done`
    here always finishes it."""
    sets: list[str] = ["updated = %s"]
    params: list[Any] = [_dt(timezone.now())]
    if change.percent_completed is not None:
        sets.append("percent_completed = %s")
        params.append(change.percent_completed)
    if change.status is not None:
        sets.append("status = %s")
        params.append(change.status)
    owner = "" if user.is_admin else " AND owner_id = %s"
    finishing = change.status == Task.Status.DONE
    update = (
        f"UPDATE {TASK} SET {', '.join(sets)} "
        # The row by the unique (run, task) index: the status check uses IS NOT DISTINCT FROM,
        # which no partial index answers (see `tasks_complete`).
        f"WHERE run_id = (SELECT id FROM {RUN} WHERE uuid = %s{owner}) AND task = %s "
        f"AND status IS NOT DISTINCT FROM %s "
        f"AND worker_id = (SELECT id FROM {WORKER} WHERE uuid = %s) "
        f"RETURNING run_id, worker_id, status, percent_completed, {_numbers_left(finishing)}"
    )
    params += [run_uuid, *([] if user.is_admin else [user.pk]), number, Task.Status.COMPUTING.value, worker_uuid]
    if not finishing:
        with prepared_cursor() as cursor:
            cursor.execute(update, params)
            row = cursor.fetchone()
    elif connection.vendor == "postgresql":
        # The worker is credited in the same statement (a data-modifying CTE, run after the rest:
        # its row is locked last, as hand-out locks it last).
        with prepared_cursor() as cursor:
            cursor.execute(
                f"WITH t AS ({update}), credit AS (UPDATE {WORKER} SET tasks_done = tasks_done + 1 "
                f"WHERE id = (SELECT worker_id FROM t)) SELECT * FROM t",
                params,
            )
            row = cursor.fetchone()
    else:  # SQLite has no data-modifying CTE: two statements under its write lock
        with transaction.atomic(), prepared_cursor() as cursor:
            cursor.execute(update, params)
            row = cursor.fetchone()
            if row is not None:
                _credit_worker(row[1], 1)
    if row is None:
        return False
    run_id, worker_id, status, percent, left = row
    _touch_worker(worker_id, timezone.now())
    _publish_finished(run_id, f"task {number}: {status} {percent:g}%", finished=finishing, left=left)
    return True


@transaction.atomic
def task_update(*, run: Run, number: int, change: TaskChange, senders: frozenset[str] = frozenset()) -> Task:
    """Apply a PUT from one of the workers `senders` (uuids; empty: the request names none); refused
    when the task is now computing for a worker not among them."""
    if number < 0 or number >= run.num_tasks:
        raise TaskNotFoundError()
    locked = Task.objects.select_for_update(of=("self",)).select_related("worker").filter(run=run, task=number)
    task = locked.first()
    if task is None:
        _materialise(run, number)
        task = locked.get()
    now = timezone.now()
    if senders and task.status == Task.Status.COMPUTING and task.worker is not None and task.worker.uuid not in senders:
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
    finished = not was_done and task.status == Task.Status.DONE
    label = f"task {number}: {task.status} {task.percent_completed:g}%"
    _publish_counts(run, label, maybe_ended=finished)
    # The worker row last (after the run row `_publish_counts` may lock), the order hand-out locks in.
    holder = task.worker
    if finished and holder is not None:
        _credit_worker(holder.pk, 1)
    if (
        holder is not None
        and holder.uuid in senders
        and holder.last_seen < now - timedelta(seconds=LAST_SEEN_RESOLUTION)
    ):
        Worker.objects.filter(pk=holder.pk).update(last_seen=now)
    return task


@dataclass(frozen=True)
class PgCompletion:
    finished: list[tuple[int, bool | None]]  # (number, whether the counter still has numbers)
    found: tuple[int, int, str, int, Any] | None  # run id, worker id, hostname, pid, last_seen; None: missing


def _complete_pg(
    *, run_uuid: str, worker_uuid: str, owner_id: int | None, numbers: list[int], now: datetime
) -> PgCompletion:
    """Batch completion in one PostgreSQL statement, with the run and the worker looked up by uuid
    (and owner, unless None), as `_claim_pg` does for hand-out.

    Rows are reached only through the numbers given, each by the unique (run, task) index (OFFSET
    0 keeps that lookup a query of its own). The checks on the row are written with IS NOT
    DISTINCT FROM, the same test as = here (never NULL) but one no index answers: else the planner
    may prefer scanning the worker's rows or the partial index of computing rows, which also holds
    entries of rows finished since the last vacuum. The run row is share-locked once, after every
    row was written (the aggregate reads the whole UPDATE first): the order a single-task PUT locks
    in (`_numbers_left`), so hand-out, which locks task rows and then the run row, can never
    deadlock with it."""
    owned = "" if owner_id is None else " AND owner_id = %(owner)s"
    sql = (
        f"WITH run_ AS (SELECT id FROM {RUN} WHERE uuid = %(run_uuid)s{owned}), "
        f"wk AS (SELECT id, hostname, pid, last_seen FROM {WORKER} WHERE uuid = %(worker_uuid)s{owned}), "
        f"done AS (UPDATE {TASK} t SET status = %(done)s, percent_completed = 100.0, updated = %(now)s "
        f"FROM (SELECT x.id FROM run_, unnest(%(numbers)s::bigint[]) AS n(task) CROSS JOIN LATERAL "
        f"(SELECT id FROM {TASK} WHERE run_id = run_.id AND task = n.task OFFSET 0) x) m, wk "
        f"WHERE t.id = m.id AND t.worker_id IS NOT DISTINCT FROM wk.id "
        f"AND t.status IS NOT DISTINCT FROM %(computing)s RETURNING t.task, t.run_id), "
        f"left_ AS (SELECT next_task < num_tasks AS more FROM {RUN} "
        f"WHERE id = (SELECT max(run_id) FROM done) FOR SHARE), "
        # Read by nothing, so run last: the worker row is locked after the run row, as in hand-out.
        f"credit AS (UPDATE {WORKER} SET tasks_done = tasks_done + (SELECT count(*) FROM done) "
        f"WHERE id = (SELECT id FROM wk) AND EXISTS (SELECT 1 FROM done)) "
        f"SELECT 0, done.task, left_.more, NULL::bigint, NULL::text, NULL::bigint, NULL::timestamptz "
        f"FROM done LEFT JOIN left_ ON true "
        f"UNION ALL SELECT 1, run_.id, NULL, wk.id, wk.hostname, wk.pid, wk.last_seen FROM run_, wk"
    )
    params = {
        "run_uuid": run_uuid,
        "worker_uuid": worker_uuid,
        "owner": owner_id,
        "done": Task.Status.DONE.value,
        "computing": Task.Status.COMPUTING.value,
        "now": _dt(now),
        "numbers": numbers,
    }
    with prepared_cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    meta = [row for row in rows if row[0] == 1]
    found = None
    if meta:
        _, run_id, _, worker_id, hostname, pid, last_seen = meta[0]
        found = (int(run_id), int(worker_id), str(hostname), int(pid), last_seen)
    return PgCompletion([(int(row[1]), row[2]) for row in rows if row[0] == 0], found)


def _completed(
    finished: list[tuple[int, bool | None]],
    *,
    run_id: int,
    worker_id: int,
    worker_label: str,
    now: datetime,
    last_seen: datetime | None,
) -> list[int]:
    """After a batch completion: the worker's sign of life and the run's event; the numbers done."""
    done = sorted(number for number, _ in finished)
    _touch_worker(worker_id, now, last_seen)
    if done:
        lefts = [left for _, left in finished]
        _publish_finished(
            run_id,
            f"{worker_label} completed {len(done)} tasks",
            finished=True,
            left=None if None in lefts else all(lefts),
        )
    return done


def tasks_complete(*, run: Run, worker: Worker, numbers: list[int]) -> list[int]:
    """Mark several tasks held by `worker` done at 100%; returns the numbers completed.

    One guarded UPDATE … RETURNING (atomic by itself): only rows computing for this worker change,
    and the statement itself says which ones did."""
    numbers = sorted(set(numbers))
    now = timezone.now()
    if connection.vendor == "postgresql":
        finished = _complete_pg(
            run_uuid=run.uuid, worker_uuid=worker.uuid, owner_id=None, numbers=numbers, now=now
        ).finished
    else:  # one parameter whatever the count (SQLite limits the number of parameters)
        sql = (
            f"UPDATE {TASK} SET status = %s, percent_completed = 100.0, updated = %s WHERE run_id = %s "
            f"AND worker_id = %s AND status = %s AND task IN (SELECT value FROM json_each(%s)) RETURNING task, NULL"
        )
        params = [Task.Status.DONE.value, _dt(now), run.pk, worker.pk, Task.Status.COMPUTING.value, json.dumps(numbers)]
        with transaction.atomic(), prepared_cursor() as cursor:
            cursor.execute(sql, params)
            finished = [(int(row[0]), row[1]) for row in cursor.fetchall()]
            _credit_worker(worker.pk, len(finished))
    return _completed(
        finished,
        run_id=run.pk,
        worker_id=worker.pk,
        worker_label=f"{worker.hostname}:{worker.pid}",
        now=now,
        last_seen=worker.last_seen,
    )


def tasks_complete_by_uuid(*, user: User, run_uuid: str, worker_uuid: str, numbers: list[int]) -> list[int] | None:
    """The API's batch completion on PostgreSQL: run and worker found by uuid (and owner) and the
    rows completed in one round trip, as `tasks_complete` completes them. None when the run or the
    worker is not the user's (nothing changed; the caller says which is missing) or on another
    database (the caller looks both up and takes `tasks_complete`)."""
    if connection.vendor != "postgresql":
        return None
    now = timezone.now()
    completion = _complete_pg(
        run_uuid=run_uuid,
        worker_uuid=worker_uuid,
        owner_id=None if user.is_admin else user.pk,
        numbers=sorted(set(numbers)),
        now=now,
    )
    if completion.found is None:
        return None
    run_id, worker_id, hostname, pid, last_seen = completion.found
    return _completed(
        completion.finished,
        run_id=run_id,
        worker_id=worker_id,
        worker_label=f"{hostname}:{pid}",
        now=now,
        last_seen=last_seen,
    )


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
