"""Writes of the jobs app: create, queue, claim, run, finish, retry, cancel and recover jobs."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import traceback as traceback_module
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from django.db import IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.db.models import F, Q
from django.db.models.functions import Greatest
from django.utils import timezone

from coordinator.errors import ApplicationError
from coordinator.models import User
from coordinator.services import audit_record
from jobs import conf, metrics
from jobs.context import JobCancelled, JobContext
from jobs.errors import JobNeedsUserError, JobNotAllowedError, JobStateError, UnknownJobTypeError
from jobs.models import ACTIVE_STATUSES, Job, JobAttempt
from jobs.registry import JobSpec, any_limited, build_kwargs, get_spec, queue_list_key, validate_args
from progress.services import progress_publish

logger = logging.getLogger("jobs")

NOTIFY_CHANNEL = "task_created"
# One id per worker process, in BookLogr's `nickname:UUID` form.
_WORKER_ID = f"{socket.gethostname()}-{os.getpid()}:{uuid.uuid4()}"


def worker_id() -> str:
    """This process's worker id (recomputed after a fork so children never share one)."""
    global _WORKER_ID
    if f"-{os.getpid()}:" not in _WORKER_ID:
        _WORKER_ID = f"{socket.gethostname()}-{os.getpid()}:{uuid.uuid4()}"
    return _WORKER_ID


def user_may_run(user: User | None, spec: JobSpec) -> bool:
    """Whether a platform user may submit this job type (admins always may)."""
    if not spec.protected:
        return True
    if user is None or not user.is_active:
        return False
    if user.is_admin or user.role in spec.roles:
        return True
    if spec.permission and user.has_perm(spec.permission):
        return True
    return user.has_perm(f"jobs.{spec.permission_codename}")


def job_state(job: Job, **extra: Any) -> dict[str, Any]:
    """A job's live state as its progress events carry it (`label` is what staff read)."""
    return {
        "status": job.status,
        "label": job.status_label,
        "percent": job.progress,
        "message": job.progress_message,
        **extra,
    }


def _publish_status(job: Job, text: str = "") -> None:
    progress_publish(
        topic=job.topic, kind="msg", text=text or job.status, state=job_state(job), owner_id=job.created_by_id
    )


def _record_attempt(job: Job, *, worker: str | None, outcome: str, error: str = "", tb: str = "") -> None:
    """Keep the attempt that just ended; called in the transaction whose guarded update ended it."""
    metrics.attempt_ended(job, outcome)
    JobAttempt.objects.create(
        job=job,
        worker=worker or "",
        started_at=job.started_at,
        finished_at=timezone.now(),
        outcome=outcome,
        error=error,
        traceback=tb,
    )


def job_check(
    *, type: str, data: Any, user: User | None, strict: bool = False, allowed_tasks: dict[str, Any] | None = None
) -> tuple[JobSpec, dict[str, Any]]:
    """The type's spec and the validated arguments, if `user` may submit them (a job or a schedule)."""
    spec = get_spec(type)
    if spec is None:
        raise UnknownJobTypeError(extra={"type": type})
    if spec.signed_in and (user is None or not user.is_active):
        raise JobNeedsUserError(extra={"type": type})
    if spec.protected:
        allowed = bool(allowed_tasks.get(spec.name)) if allowed_tasks is not None else user_may_run(user, spec)
        if not allowed:
            raise JobNotAllowedError(extra={"type": type})
    return spec, validate_args(spec, {} if data is None and not spec.params else data, strict=strict)


@transaction.atomic
def job_create(
    *,
    type: str,
    data: Any,
    user: User | None,
    strict: bool = False,
    allowed_tasks: dict[str, Any] | None = None,
    run_after: datetime | None = None,
    unique_key: str | None = None,
    rerun_of: Job | None = None,
    queue: str | None = None,
) -> Job:
    """Validate the arguments and authorization, store a `fresh` job and queue it after commit.

    `allowed_tasks` is the claim of a pytasks token; when given it decides for protected types
    instead of the user's permissions. A job with a future `run_after` stays `fresh` until then
    (the brokers queue it at that time). With a `unique_key`, while a job of the same type and
    key is fresh or started that job is returned instead, with `existing` set.
    """
    spec, args = job_check(type=type, data=data, user=user, strict=strict, allowed_tasks=allowed_tasks)
    fields = _job_fields(spec, args, user=user, run_after=run_after, queue=queue)
    fields.update(unique_key=unique_key or None, rerun_of=rerun_of)
    job = _job_insert_unique(fields) if unique_key else Job.objects.create(**fields)
    if job.existing:
        return job
    metrics.job_submitted(job)
    job_id = job.pk
    if run_after is not None and run_after > timezone.now():
        transaction.on_commit(lambda: job_notify_delayed(run_after=run_after))
    else:
        transaction.on_commit(lambda: job_enqueue(job_id=job_id, job_type=spec.name, queue=job.queue))
    return job


def _job_fields(
    spec: JobSpec,
    args: dict[str, Any],
    *,
    user: User | None,
    run_after: datetime | None = None,
    queue: str | None = None,
) -> dict[str, Any]:
    """The columns of a new job of a checked type and arguments (one job or a batch)."""
    return {
        "type": spec.name,
        "data": args,
        "created_by": user,
        "max_attempts": spec.max_attempts,
        "run_after": run_after,
        "queue": queue or spec.queue,
    }


@dataclass(frozen=True)
class JobRequest:
    """One job of a batch (`jobs_create`): a type, its arguments and whose permissions it runs with."""

    type: str
    data: Any
    user: User | None


@transaction.atomic
def jobs_create(*, requests: Sequence[JobRequest]) -> list[Job | ApplicationError]:
    """The batch form of `job_create` (no delay, no unique key): each request is checked like
    one job, the valid ones are inserted in one statement and queued together after commit.
    Returns, in the requests' order, each job or the error that refused it."""
    outcomes: list[Job | ApplicationError] = []
    checked: list[Job] = []
    for request in requests:
        try:
            spec, args = job_check(type=request.type, data=request.data, user=request.user)
        except ApplicationError as exc:
            outcomes.append(exc)
            continue
        job = Job(**_job_fields(spec, args, user=request.user))
        outcomes.append(job)
        checked.append(job)
    if not checked:
        return outcomes
    Job.objects.bulk_create(checked)  # sets the ids (INSERT … RETURNING on PostgreSQL and SQLite)
    for job in checked:
        metrics.job_submitted(job)
    queued = [QueuedJob(job.pk, job.type, job.queue) for job in checked]
    transaction.on_commit(lambda: jobs_enqueue(jobs=queued))
    return outcomes


def _job_insert_unique(fields: dict[str, Any]) -> Job:
    """Insert the job, or return the active job that holds its (type, unique_key).

    The partial unique index decides: on PostgreSQL a concurrent insert of the same key waits
    for the first transaction and then fails, so two submitters never both create a job. The
    holder may finish between the failed insert and the read; the insert is then tried again.
    """
    for _ in range(3):
        try:
            with transaction.atomic():  # a savepoint: the clash leaves the caller's transaction usable
                return Job.objects.create(**fields)
        except IntegrityError:
            holder = Job.objects.filter(
                type=fields["type"], unique_key=fields["unique_key"], status__in=ACTIVE_STATUSES
            ).first()
            if holder is not None:
                holder.existing = True
                return holder
    raise JobStateError("The unique key is changing hands too fast; send the job again.")


def job_notify_delayed(*, run_after: datetime) -> None:
    """Tell the brokers a delayed job is due at `run_after` (`NOTIFY task_created, 'due <epoch>'`),
    so each one sleeps until the earliest due time instead of polling for it."""
    if connection.vendor != "postgresql":
        return  # SQLite brokers look for due jobs on every poll
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_notify(%s, %s)", [NOTIFY_CHANNEL, f"{DUE_PREFIX}{run_after.timestamp():.6f}"])


# The payload prefix of a delayed job's NOTIFY (a queued job's payload is its id).
DUE_PREFIX = "due "


def jobs_queue_due(*, limit: int = 1000) -> list[int]:
    """Queue delayed `fresh` jobs whose time has come, earliest first (the brokers call this at
    the earliest job's time; the guard in `job_enqueue` makes several brokers doing it harmless)."""
    due = (
        Job.objects.filter(status=Job.Status.FRESH, queued_at__isnull=True, run_after__lte=timezone.now())
        .order_by("run_after")
        .values_list("pk", "type", "queue")[:limit]
    )
    return [pk for pk, job_type, queue in list(due) if job_enqueue(job_id=pk, job_type=job_type, queue=queue)]


class QueuedJob(NamedTuple):
    """What queueing a job needs: its id, and the type and queue its queue entry names."""

    id: int
    type: str
    queue: str


def job_enqueue(*, job_id: int, job_type: str | None = None, queue: str | None = None) -> bool:
    """Hand a committed `fresh` job to django-q2 once, on its queue's cluster name (`jobs_enqueue`
    for one job); the type and queue are read when not given."""
    if job_type is None or queue is None:
        row = Job.objects.filter(pk=job_id).values_list("type", "queue").first()
        if row is None:
            return False
        job_type, queue = row
    return bool(jobs_enqueue(jobs=[QueuedJob(job_id, job_type, queue)]))


class _CollectingBroker:
    """Stands in for the broker in `async_task`: keeps the signed package instead of inserting
    it, so django-q2 still builds every queue entry and a batch's rows go in in one statement."""

    def __init__(self, list_key: str) -> None:
        self.list_key = list_key
        self.packages: list[str] = []

    def enqueue(self, package: str) -> None:
        self.packages.append(package)


def jobs_enqueue(*, jobs: Sequence[QueuedJob]) -> list[int]:
    """Hand committed `fresh` jobs to django-q2 once each, on their queues' cluster names, with
    one `NOTIFY task_created, '<id>'`; returns the ids queued here.

    The guard, the queue rows and the NOTIFY are one transaction: the notification is delivered
    when the queue rows become visible, and a failure leaves the jobs in the backlog.
    """
    from django_q.models import OrmQ
    from django_q.tasks import async_task

    if not jobs:
        return []
    ids = [job.id for job in jobs]
    stamp = timezone.now()
    try:
        with transaction.atomic():
            # The guard makes the web process, the backlog command, the sweep and other clusters
            # never queue a job twice. The stamp tells the rows this call took from those another
            # process took meanwhile; it is read back only when some were taken elsewhere.
            taken = Job.objects.filter(pk__in=ids, status=Job.Status.FRESH, queued_at__isnull=True).update(
                queued_at=stamp
            )
            if not taken:
                return []
            if taken < len(ids):
                mine = set(Job.objects.filter(pk__in=ids, queued_at=stamp).values_list("pk", flat=True))
                jobs = [job for job in jobs if job.id in mine]
            entries = []
            for job in jobs:
                spec = get_spec(job.type)
                collector = _CollectingBroker(queue_list_key(job.queue))
                # save=False: the job row keeps the outcome; django-q2 need not store successes again.
                async_task(
                    "jobs.tasks.job_run",
                    job.id,
                    job.type,
                    timeout=(spec.timeout if spec and spec.timeout else None) or conf.default_timeout(),
                    broker=collector,
                    save=False,
                    task_name=f"job {job.id} {job.type}"[:100],
                )
                entries += [OrmQ(key=collector.list_key, payload=package, lock=stamp) for package in collector.packages]
            OrmQ.objects.bulk_create(entries)
            if connection.vendor == "postgresql":
                # One notification wakes every listening broker; each then takes what it serves.
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_notify(%s, %s)", [NOTIFY_CHANNEL, str(jobs[0].id)])
    except Exception:
        logger.exception("Could not queue jobs %s; the sweep will retry", ids[:20])
        return []
    return [job.id for job in jobs]


# A job refused by its type's `max_running` waits this long before it is queued again.
CAPACITY_WAIT_SECONDS = 1.0


def job_claim(*, job_id: int, worker: str, spec: JobSpec | None = None) -> bool:
    """Take a fresh job for this worker: one guarded UPDATE, so each attempt runs exactly once.

    A type with `max_running` is claimed only while fewer of it are started. That count and the
    claim must not interleave between workers, so on PostgreSQL claims of the type take a
    transaction-scoped advisory lock first (SQLite runs one writer at a time anyway).
    """
    now = timezone.now()
    guard = Q(run_after__isnull=True) | Q(run_after__lte=now)
    if spec is not None and spec.max_running:
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"jobs.max_running:{spec.name}"])
        if Job.objects.filter(type=spec.name, status=Job.Status.STARTED).count() >= spec.max_running:
            # Full: a due job waits a moment and is queued again (the guard leaves others alone).
            run_after = now + timedelta(seconds=CAPACITY_WAIT_SECONDS)
            if Job.objects.filter(guard, pk=job_id, status=Job.Status.FRESH).update(
                queued_at=None, run_after=run_after
            ):
                transaction.on_commit(lambda: job_notify_delayed(run_after=run_after))
            return False
    claimed = Job.objects.filter(guard, pk=job_id, status=Job.Status.FRESH).update(
        status=Job.Status.STARTED,
        worker=worker,
        updated_on=now,
        started_at=now,
        heartbeat_at=now,
        finished_at=None,
        progress=0,
        progress_message="",
        cancel_requested=False,
        error="",
        traceback="",
        attempts=F("attempts") + 1,
    )
    return claimed == 1


class _Heartbeat(threading.Thread):
    """Touches `heartbeat_at` of the job this process is running, so the sweep can tell a live
    job from a dead one. One daemon thread per worker process, started with its first job."""

    _instance: _Heartbeat | None = None
    _instance_pid = 0
    _lock = threading.Lock()

    def __init__(self) -> None:
        super().__init__(name="job-heartbeat", daemon=True)
        self.current: tuple[int, str] | None = None

    @classmethod
    def get(cls) -> _Heartbeat:
        with cls._lock:
            if cls._instance is None or cls._instance_pid != os.getpid() or not cls._instance.is_alive():
                cls._instance = cls()
                cls._instance_pid = os.getpid()
                cls._instance.start()
            return cls._instance

    def run(self) -> None:
        while True:
            time.sleep(conf.heartbeat_seconds())
            current = self.current
            if current is None:
                continue
            try:
                Job.objects.filter(pk=current[0], status=Job.Status.STARTED, worker=current[1]).update(
                    heartbeat_at=timezone.now()
                )
            except Exception:
                logger.exception("heartbeat of job %s failed", current[0])
            finally:
                # A connection held between beats would outlive its database (tests drop theirs).
                connection.close()


def job_report_progress(
    *, job_id: int, worker: str, percent: float, message: str, extra_state: dict[str, Any] | None = None
) -> bool:
    """Store and publish progress; returns True when a cancel was requested."""
    now = timezone.now()
    percent = max(0.0, min(100.0, float(percent)))
    # The progress columns and the `msg` event are one transaction (one commit per report).
    with transaction.atomic():
        Job.objects.filter(pk=job_id, status=Job.Status.STARTED, worker=worker).update(
            progress=percent, progress_message=message[:500], updated_on=now, heartbeat_at=now
        )
        row = Job.objects.filter(pk=job_id).values("cancel_requested", "created_by_id").first()
        if row is None:
            return True
        state = {
            "percent": percent,
            "status": Job.Status.STARTED,
            "label": Job.Status.STARTED,
            "message": message,
            **(extra_state or {}),
        }
        progress_publish(topic=f"job:{job_id}", kind="msg", text=message, state=state, owner_id=row["created_by_id"])
    return bool(row["cancel_requested"])


def _json_result(value: Any) -> Any:
    json.dumps(value)  # raises TypeError/ValueError when not JSON-serialisable
    return value


def job_execute(*, job_id: int, job_type: str | None = None) -> str:
    """Run one job in this worker if it can be claimed; returns the final or current status."""
    worker = worker_id()
    limited = _limited_spec(job_id, job_type)
    # The claim, the read and the `new` event are one transaction: one commit per start.
    with transaction.atomic():
        if not job_claim(job_id=job_id, worker=worker, spec=limited):
            return "skipped"
        job = Job.objects.get(pk=job_id)
        progress_publish(
            topic=job.topic,
            kind="new",
            text=job.type,
            state={**job_state(job, percent=0, message=""), "worker": worker},
            owner_id=job.created_by_id,
        )
    metrics.job_started(job)
    spec = get_spec(job.type)
    heartbeat = _Heartbeat.get()
    heartbeat.current = (job_id, worker)
    retryable = True
    try:
        if spec is None:
            retryable = False
            raise LookupError(f"job type {job.type!r} is not registered in this worker")
        ctx = JobContext(
            job_id=job_id,
            job_type=job.type,
            user_id=job.created_by_id,
            worker=worker,
            attempt=job.attempts,
            record_progress=job_report_progress,
        )
        kwargs = build_kwargs(spec, job.data if isinstance(job.data, dict) else {})
        if spec.context_param:
            kwargs[spec.context_param] = ctx
        result = _json_result(spec.func(**kwargs))
    except JobCancelled as exc:
        return _record_outcome(
            heartbeat, job_id=job_id, worker=worker, ok=False, error=str(exc), retryable=False, job=job
        )
    except (Exception, SystemExit) as exc:
        # django-q2's TimeoutException derives from SystemExit; it is the per-job timeout.
        if type(exc).__name__ == "TimeoutException":
            error = f"Timed out: the job ran longer than its timeout ({exc})."
        elif isinstance(exc, SystemExit):
            heartbeat.current = None
            raise
        else:
            error = f"{type(exc).__name__}: {exc}"
        return _record_outcome(
            heartbeat,
            job_id=job_id,
            worker=worker,
            ok=False,
            error=error,
            tb=traceback_module.format_exc(),
            retryable=retryable,
            job=job,
        )
    return _record_outcome(heartbeat, job_id=job_id, worker=worker, ok=True, result=result, job=job)


# How long a worker holds the outcome of a finished attempt while the database is unreachable.
OUTCOME_PATIENCE_SECONDS = 300.0


def _record_outcome(heartbeat: _Heartbeat, **outcome: Any) -> str:
    """`job_finish`, waiting out a database outage: the work is done, and an outcome dropped here
    would leave the job `started` for the sweep to run a second time. The heartbeat goes on
    meanwhile, so the job is not taken for a lost one once the database is back."""
    delay = 0.2
    deadline = time.monotonic() + OUTCOME_PATIENCE_SECONDS
    try:
        while True:
            try:
                return job_finish(**outcome)
            except (OperationalError, InterfaceError):
                if time.monotonic() >= deadline:
                    raise
                logger.warning("database unreachable; holding the outcome of job %s", outcome["job_id"])
                connection.close()
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
    finally:
        heartbeat.current = None


def _limited_spec(job_id: int, job_type: str | None) -> JobSpec | None:
    """The job's spec when its type has a `max_running` (the type comes with the queue entry; it
    is read only for an entry queued before it did, and only if some type has a limit)."""
    if not any_limited():
        return None
    if job_type is None:
        job_type = Job.objects.filter(pk=job_id).values_list("type", flat=True).first()
    spec = get_spec(job_type) if job_type else None
    return spec if spec is not None and spec.max_running else None


def job_finish(
    *,
    job_id: int,
    worker: str,
    ok: bool,
    result: Any = None,
    error: str = "",
    tb: str = "",
    retryable: bool = True,
    job: Job | None = None,
) -> str:
    """Record the outcome of the attempt this worker holds; a failure is retried per the policy."""
    now = timezone.now()
    if job is None:
        job = Job.objects.filter(pk=job_id).first()
    if ok:
        # The result and the `end` event are one transaction: one commit per finish.
        with transaction.atomic():
            # The worker guard: if the sweep already gave this attempt up, its outcome no longer counts.
            if not Job.objects.filter(pk=job_id, status=Job.Status.STARTED, worker=worker).update(
                status=Job.Status.SUCCESS, result=result, progress=100, updated_on=now, finished_at=now
            ):
                return "lost"
            if job is not None:
                _record_attempt(job, worker=worker, outcome=JobAttempt.Outcome.SUCCESS)
            progress_publish(
                topic=f"job:{job_id}",
                kind="end",
                text="",
                state={"status": Job.Status.SUCCESS, "label": Job.Status.SUCCESS, "percent": 100, "message": ""},
                owner_id=job.created_by_id if job else None,
            )
        return Job.Status.SUCCESS
    if job is None or job.status != Job.Status.STARTED or job.worker != worker:
        return "lost"
    return _fail_or_retry(job, worker=worker, error=error, tb=tb, retryable=retryable)


def _fail_or_retry(job: Job, *, worker: str | None, error: str, tb: str = "", retryable: bool = True) -> str:
    now = timezone.now()
    spec = get_spec(job.type)
    guard = Job.objects.filter(pk=job.pk, status=Job.Status.STARTED)
    if worker is not None:
        guard = guard.filter(worker=worker)
    if retryable and job.attempts < job.max_attempts:
        delay = spec.backoff_for(job.attempts) if spec else 0.0
        # The outcome and its event are one transaction; the job is queued again after it.
        with transaction.atomic():
            updated = guard.update(
                status=Job.Status.FRESH,
                worker=None,
                error=error,
                traceback=tb,
                updated_on=now,
                queued_at=None,
                run_after=now + timedelta(seconds=delay),
                heartbeat_at=None,
            )
            if not updated:
                return "lost"
            _record_attempt(job, worker=worker, outcome=JobAttempt.Outcome.RETRYING, error=error, tb=tb)
            job.refresh_from_db()
            _publish_status(job, f"retrying after: {error}")
        if delay <= 0:
            job_enqueue(job_id=job.pk, job_type=job.type, queue=job.queue)
        else:
            job_notify_delayed(run_after=now + timedelta(seconds=delay))
        return Job.Status.FRESH
    with transaction.atomic():
        if not guard.update(status=Job.Status.FAILURE, error=error, traceback=tb, updated_on=now, finished_at=now):
            return "lost"
        # The row, not the copy read when the attempt began: its bar stays where the job left it.
        job.refresh_from_db()
        outcome = JobAttempt.Outcome.CANCELLED if job.cancel_requested else JobAttempt.Outcome.FAILURE
        _record_attempt(job, worker=worker, outcome=outcome, error=error, tb=tb)
        progress_publish(
            topic=job.topic, kind="end", text=error, state=job_state(job, message=error), owner_id=job.created_by_id
        )
    return Job.Status.FAILURE


@transaction.atomic
def job_retry(*, job: Job) -> Job:
    """Put a `failure` back to `fresh` with a fresh attempt budget and queue it after commit."""
    try:
        with transaction.atomic():  # a savepoint: a unique-key clash leaves the transaction usable
            updated = _job_reset_failed(job)
    except IntegrityError as exc:
        raise JobStateError(
            "Another job with this unique key is waiting or running.", extra={"unique_key": job.unique_key}
        ) from exc
    if not updated:
        raise JobStateError("Only a task in status failure can be retried.", extra={"status": job.status})
    job.refresh_from_db()
    audit_record(action="job.retry", target=job, before={"status": Job.Status.FAILURE}, after={"status": job.status})
    _publish_status(job)
    transaction.on_commit(lambda: job_enqueue(job_id=job.pk))
    return job


def _job_reset_failed(job: Job) -> int:
    return Job.objects.filter(pk=job.pk, status=Job.Status.FAILURE).update(
        status=Job.Status.FRESH,
        worker=None,
        queued_at=None,
        run_after=None,
        attempts=0,
        interruptions=0,
        result=None,
        progress=0,
        progress_message="",
        cancel_requested=False,
        heartbeat_at=None,
        finished_at=None,
        updated_on=timezone.now(),
    )


@transaction.atomic
def job_cancel(*, job: Job) -> Job:
    """Cancel a fresh job now, or ask a started one to stop at its next progress report."""
    now = timezone.now()
    if Job.objects.filter(pk=job.pk, status=Job.Status.FRESH).update(
        status=Job.Status.FAILURE,
        error="Cancelled before it started.",
        updated_on=now,
        finished_at=now,
        cancel_requested=True,
    ):
        job.refresh_from_db()
        audit_record(action="job.cancel", target=job, before={"status": Job.Status.FRESH}, after={"status": job.status})
        _publish_status(job, job.error)
        progress_publish(topic=job.topic, kind="end", text=job.error, state=job_state(job), owner_id=job.created_by_id)
        return job
    if Job.objects.filter(pk=job.pk, status=Job.Status.STARTED).update(cancel_requested=True):
        job.refresh_from_db()
        audit_record(action="job.cancel", target=job, before={"status": job.status}, after={"cancel_requested": True})
        return job
    job.refresh_from_db()
    raise JobStateError("Only a fresh or started task can be cancelled.", extra={"status": job.status})


@transaction.atomic
def job_rerun(*, job: Job, user: User, data: Any = None) -> Job:
    """Run a job again as a new job linked to it (same arguments, or new ones validated by the
    registry), owned like the original: an export rerun by an admin still exports the owner's data."""
    spec = get_spec(job.type)
    if spec is None:
        raise UnknownJobTypeError(extra={"type": job.type})
    if not user_may_run(user, spec):  # the caller's own right, besides the owner's checked below
        raise JobNotAllowedError(extra={"type": job.type})
    return job_create(type=job.type, data=job.data if data is None else data, user=job.created_by, rerun_of=job)


# A job whose worker was lost this many times fails like any error: it may be what kills its workers.
MAX_INTERRUPTIONS = 3


def jobs_recover_stale(*, stale_seconds: float | None = None) -> list[int]:
    """Queue again, or fail, `started` jobs whose worker stopped heart-beating (killed, lost host,
    cut off by a stop). A lost worker is not the job's failure: the job runs again without using
    an attempt, up to MAX_INTERRUPTIONS times; after that it is retried or failed as an error."""
    bound = conf.stale_seconds() if stale_seconds is None else stale_seconds
    cutoff = timezone.now() - timedelta(seconds=bound)
    recovered: list[int] = []
    for job in Job.objects.filter(status=Job.Status.STARTED, heartbeat_at__lt=cutoff):
        error = f"Worker {job.worker} stopped responding (no heartbeat for more than {bound:g} s)."
        metrics.job_stale_recovered(job)
        # The worker guard makes a late heartbeat or a second sweeper lose the race harmlessly.
        if job.interruptions < MAX_INTERRUPTIONS:
            status = _requeue_interrupted(job, error=error)
        else:
            status = _fail_or_retry(job, worker=job.worker, error=error)
        recovered.append(job.pk)
        logger.warning("recovered job %s from lost worker %s -> %s", job.pk, job.worker, status)
    return recovered


def _requeue_interrupted(job: Job, *, error: str) -> str:
    with transaction.atomic():
        updated = Job.objects.filter(pk=job.pk, status=Job.Status.STARTED, worker=job.worker).update(
            status=Job.Status.FRESH,
            worker=None,
            error=error,
            updated_on=timezone.now(),
            queued_at=None,
            run_after=None,
            heartbeat_at=None,
            attempts=Greatest(F("attempts") - 1, 0),
            interruptions=F("interruptions") + 1,
        )
        if not updated:
            return "lost"
        _record_attempt(job, worker=job.worker, outcome=JobAttempt.Outcome.INTERRUPTED, error=error)
        job.refresh_from_db()
        _publish_status(job, f"running again: {error}")
    job_enqueue(job_id=job.pk, job_type=job.type, queue=job.queue)
    return Job.Status.FRESH


def jobs_queue_backlog(*, grace_seconds: float = 10.0) -> list[int]:
    """Queue `fresh` jobs that were never handed to django-q2 (or whose backoff has passed)."""
    now = timezone.now()
    due = Job.objects.filter(
        Q(run_after__isnull=True) | Q(run_after__lte=now),
        status=Job.Status.FRESH,
        queued_at__isnull=True,
        created_at__lte=now - timedelta(seconds=grace_seconds),
    ).values_list("pk", flat=True)
    return [job_id for job_id in list(due) if job_enqueue(job_id=job_id)]


# A `fresh` job handed to django-q2 longer ago than this, that no cluster has started, was lost on
# the way: its queue entry is gone (a worker whose dead database connection failed the claim had
# already taken it) or is held by a cluster that was killed after fetching it (django-q2 would
# hand it out again only after Q_RETRY, 11 minutes). 45 s plus one sweep period (5 s) keeps a
# killed worker's job waiting less than the 60 s the platform promises after any single kill.
REQUEUE_AFTER_SECONDS = 45.0


def _queued_job_id(entry: Any) -> int | None:
    """The job id of a django-q2 queue entry queued by `job_enqueue` (its task name)."""
    name = str(entry.name() or "")
    parts = name.split(" ")
    return int(parts[1]) if len(parts) >= 2 and parts[0] == "job" and parts[1].isdigit() else None


def jobs_requeue_undelivered(*, after_seconds: float = REQUEUE_AFTER_SECONDS) -> list[int]:
    """The job table is the outbox: queue again every `fresh` job handed out more than
    `after_seconds` ago whose queue entry is gone or was fetched and never started. A second
    delivery is harmless: only one worker's claim succeeds."""
    from django_q.models import OrmQ

    now = timezone.now()
    waiting = set(
        Job.objects.filter(status=Job.Status.FRESH, queued_at__lt=now - timedelta(seconds=after_seconds))
        .order_by("pk")
        .values_list("pk", flat=True)[:1000]
    )
    if not waiting:
        return []
    unfetched: set[int] = set()
    forgotten: list[int] = []  # queue entries a cluster fetched (locked into the future) long ago
    for entry in OrmQ.objects.all():
        job_id = _queued_job_id(entry)
        if job_id not in waiting:
            continue
        if entry.lock is not None and entry.lock > now:
            forgotten.append(entry.pk)
        else:
            unfetched.add(job_id)  # still waiting its turn in the queue
    lost = sorted(waiting - unfetched)
    OrmQ.objects.filter(pk__in=forgotten).delete()
    Job.objects.filter(pk__in=lost, status=Job.Status.FRESH).update(queued_at=None)
    requeued = [job_id for job_id in lost if job_enqueue(job_id=job_id)]
    if requeued:
        logger.warning("queued again %d job(s) that no cluster started: %s", len(requeued), requeued[:20])
    return requeued


def jobs_delete_fresh() -> int:
    """Delete every `fresh` job (BookLogr's `clear`)."""
    deleted, _ = Job.objects.filter(status=Job.Status.FRESH).delete()
    return deleted


def jobs_sweep(*, recover: bool = True) -> dict[str, list[Any]]:
    """One maintenance pass, run by every cluster's broker and by `manage.py jobs_sweep`.
    `recover=False` leaves started jobs alone (a broker just back from a database outage)."""
    from django.core.cache import cache

    from jobs.exports import orphan_parts_remove
    from jobs.retention import jobs_prune_if_due
    from progress.watchdog import watchdog_sweep_if_due

    # The clusters' sign of life (/healthz). No expiry, on purpose: an expired key would read as
    # `absent` (healthy) once every cluster is gone, where `stale` must show.
    cache.set(conf.SWEEP_SEEN_KEY, time.time(), timeout=None)
    watchdog_sweep_if_due()  # the silence watchdog's rules, at most every 30 s across clusters
    pruned = jobs_prune_if_due() or {}  # once an hour across all clusters
    return {
        "recovered": jobs_recover_stale() if recover else [],
        "requeued": jobs_requeue_undelivered(),
        "queued": jobs_queue_backlog(),
        "removed_parts": orphan_parts_remove(),
        "pruned": [f"{count} {kind}" for kind, count in pruned.items() if count],
    }
