"""Schedules: when they run (croniter, in each schedule's own time zone) and the writes that start
their jobs.

Why not django-q2's `Schedule`: its scheduler runs every 30 s and only in the cluster named like
the site (a `qcluster --queue …` cluster never fires one), computes cron times in `TIME_ZONE`
rather than per schedule, and takes every due row under one blocking `SELECT … FOR UPDATE`. Here
every cluster's broker fires due schedules at their time (it sleeps until the earliest, told of
changes by NOTIFY, like delayed jobs), in batches under `FOR UPDATE SKIP LOCKED`, and the unique
(schedule, occurrence) row is the guard that no occurrence starts twice. croniter is the
library django-q2 uses for cron.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from coordinator.errors import ApplicationError
from coordinator.models import User
from coordinator.services import audit_record
from jobs.errors import ScheduleInvalidError, ScheduleOwnerInactiveError, TooManySchedulesError
from jobs.models import JobSchedule, JobScheduleRun
from jobs.services import JobRequest, job_check, job_notify_delayed, jobs_create

# Schedules fired per transaction by one broker; the rest wait for its next pass.
FIRE_BATCH = 500
MAX_INTERVAL_SECONDS = 366 * 24 * 3600
WHEN_FIELDS = ("cron", "interval_seconds", "run_at")


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ScheduleInvalidError(f"Unknown time zone {name!r}.", extra={"field": "timezone"}) from exc


def occurrences(
    *,
    cron: str,
    interval_seconds: int | None,
    run_at: datetime | None,
    tz: str,
    first: datetime,
    after: datetime,
    count: int,
) -> list[datetime]:
    """Up to `count` occurrences strictly after `after`, in UTC. `first` anchors an interval's grid."""
    if cron:
        it = croniter(cron, after.astimezone(_zone(tz)))
        return [it.get_next(datetime).astimezone(UTC) for _ in range(count)]
    if interval_seconds:
        step = timedelta(seconds=interval_seconds)
        skipped = max(0, math.floor((after - first) / step) + 1)
        return [first + step * (skipped + i) for i in range(count)]
    return [run_at] if run_at is not None and run_at > after else []


def schedule_next_runs(schedule: JobSchedule, *, count: int = 5) -> list[datetime]:
    """The next `count` times the schedule will run (none while it is paused)."""
    if schedule.next_run_at is None or not schedule.enabled:
        return []
    return [schedule.next_run_at, *_after(schedule, schedule.next_run_at, count - 1)]


def _after(schedule: JobSchedule, moment: datetime, count: int, first: datetime | None = None) -> list[datetime]:
    return occurrences(
        cron=schedule.cron,
        interval_seconds=schedule.interval_seconds,
        run_at=schedule.run_at,
        tz=schedule.timezone,
        first=first or schedule.next_run_at or moment,
        after=moment,
        count=count,
    )


def _validate_when(fields: dict[str, Any]) -> None:
    given = [name for name in WHEN_FIELDS if fields.get(name) not in (None, "")]
    if len(given) != 1:
        raise ScheduleInvalidError("Give exactly one of cron, interval_seconds or run_at.", extra={"given": given})
    cron = fields.get("cron") or ""
    if cron and (len(cron.split()) != 5 or not croniter.is_valid(cron)):
        raise ScheduleInvalidError("cron must be a 5-field expression such as '59 23 * * *'.", extra={"field": "cron"})
    if cron:
        try:  # a well-formed expression may still never match (`0 0 31 2 *`): croniter gives up
            croniter(cron, timezone.now()).get_next(datetime)
        except CroniterError:
            raise ScheduleInvalidError("cron never matches a date.", extra={"field": "cron"}) from None
    interval = fields.get("interval_seconds")
    shortest = settings.SCHEDULES_MIN_INTERVAL_SECONDS
    if interval is not None and not shortest <= interval <= MAX_INTERVAL_SECONDS:
        raise ScheduleInvalidError(
            f"interval_seconds must be from {shortest} to {MAX_INTERVAL_SECONDS}.", extra={"field": "interval_seconds"}
        )
    run_at = fields.get("run_at")
    if run_at is not None and timezone.is_naive(run_at):
        raise ScheduleInvalidError("run_at needs a UTC offset.", extra={"field": "run_at"})
    _zone(fields.get("timezone") or "UTC")


def _first_run(schedule: JobSchedule, now: datetime) -> datetime | None:
    if schedule.run_at is not None:
        return schedule.run_at  # a time already past runs at once
    if schedule.interval_seconds:
        return now + timedelta(seconds=schedule.interval_seconds)
    return _after(schedule, now, 1)[0]


def _notify(schedule: JobSchedule) -> None:
    due = schedule.next_run_at
    if schedule.enabled and due is not None:
        transaction.on_commit(lambda: job_notify_delayed(run_after=due))


@transaction.atomic
def schedule_create(*, owner: User, now: datetime | None = None, **fields: Any) -> JobSchedule:
    """Store a schedule whose type and arguments the owner may submit (checked like a job)."""
    _spec, fields["data"] = job_check(type=fields.get("type", ""), data=fields.get("data"), user=owner)
    _validate_when(fields)
    # Each schedule starts jobs on its own for as long as it exists (every second at most): a
    # bounded number per user keeps one user from flooding the shared job queue. The owner's row
    # is locked first, so that concurrent creates cannot all count below the cap and pass it together.
    User.objects.select_for_update().filter(pk=owner.pk).first()
    if JobSchedule.objects.filter(owner=owner).count() >= settings.SCHEDULES_PER_OWNER:
        raise TooManySchedulesError(
            f"At most {settings.SCHEDULES_PER_OWNER} schedules per user; delete one first.",
            extra={"limit": settings.SCHEDULES_PER_OWNER},
        )
    schedule = JobSchedule(owner=owner, **fields)
    schedule.next_run_at = _first_run(schedule, now or timezone.now())
    schedule.save()
    audit_record(action="schedule.create", target=schedule, after=_shown(schedule))
    _notify(schedule)
    return schedule


@transaction.atomic
def schedule_update(*, schedule: JobSchedule, now: datetime | None = None, **changes: Any) -> JobSchedule:
    """Change a schedule; its next run is computed again when its timing changes."""
    now = now or timezone.now()
    if any(name in changes for name in WHEN_FIELDS):
        # A new way to say when replaces the old one.
        for name in WHEN_FIELDS:
            changes.setdefault(name, "" if name == "cron" else None)
    merged = {name: getattr(schedule, name) for name in ("type", "data", *WHEN_FIELDS, "timezone")}
    merged.update(changes)
    _spec, merged["data"] = job_check(type=merged["type"], data=merged["data"], user=schedule.owner)
    _validate_when(merged)
    changes["data"] = merged["data"]
    before = _shown(schedule)
    for name, value in changes.items():
        setattr(schedule, name, value)
    if any(name in changes for name in (*WHEN_FIELDS, "timezone", "enabled")):
        schedule.next_run_at = _first_run(schedule, now)
    schedule.save()
    audit_record(action="schedule.update", target=schedule, before=before, after=_shown(schedule))
    _notify(schedule)
    return schedule


@transaction.atomic
def schedule_delete(*, schedule: JobSchedule) -> None:
    """Delete a schedule and its history (the jobs it started stay)."""
    audit_record(action="schedule.delete", target=schedule, before=_shown(schedule))
    schedule.delete()


def _shown(schedule: JobSchedule) -> dict[str, Any]:
    """What the audit trail keeps of a schedule: what runs, when, and whether it is on."""
    fields = ("type", "data", *WHEN_FIELDS, "timezone", "enabled", "missed")
    return {name: getattr(schedule, name) for name in fields}


def schedules_fire_due(*, now: datetime | None = None, limit: int = FIRE_BATCH) -> int:
    """Start the jobs of due schedules (one batch) and move each to its next occurrence; run by
    every cluster's broker at the earliest schedule's time. Returns how many were due."""
    now = now or timezone.now()
    with transaction.atomic():
        # SKIP LOCKED: clusters firing at the same moment share the due schedules instead of
        # waiting on each other; the unique (schedule, occurrence) row below is the final guard.
        due = list(
            JobSchedule.objects.select_for_update(skip_locked=True)
            .select_related("owner")
            .filter(enabled=True, next_run_at__lte=now)
            .order_by("next_run_at")[:limit]
        )
        owners: dict[int, User] = {}
        runs = []
        for schedule in due:
            # One instance per owner: its permissions are read once for the whole batch.
            schedule.owner = owners.setdefault(schedule.owner_id, schedule.owner)
            runs.append(_plan(schedule, now))
        try:
            with transaction.atomic():  # a savepoint: a clash undoes the batch's jobs and rows only
                _start(runs)
        except IntegrityError:
            # Some occurrence already has its row (another cluster, or a schedule moved back):
            # one at a time, so every other occurrence of the batch still starts.
            for run in runs:
                try:
                    with transaction.atomic():
                        _start([run])
                except IntegrityError:
                    pass  # another cluster already has this occurrence
        touched = timezone.now()
        for schedule in due:
            schedule.updated_at = touched
        JobSchedule.objects.bulk_update(due, ["next_run_at", "updated_at"])
    return len(due)


def _plan(schedule: JobSchedule, now: datetime) -> JobScheduleRun:
    """The run row of the schedule's due occurrence (a skipped one when it was missed and the
    schedule skips missed runs), and the schedule moved to its next occurrence (not yet saved)."""
    occurrence = schedule.next_run_at
    assert occurrence is not None
    # Missed, not merely late: the following occurrence has passed too (no cluster ran for a
    # whole period). A backlog of due schedules that takes a while to fire is only late.
    following = _after(schedule, occurrence, 1, first=occurrence)
    missed = bool(following) and following[0] <= now
    # Missed occurrences are never run one by one: the next is the first one after now.
    upcoming = _after(schedule, now, 1, first=occurrence)
    schedule.next_run_at = upcoming[0] if upcoming else None
    if missed and schedule.missed == JobSchedule.Missed.SKIP:
        return JobScheduleRun(
            schedule=schedule, occurrence=occurrence, skipped=True, error="Missed (no cluster was running); skipped."
        )
    return JobScheduleRun(schedule=schedule, occurrence=occurrence)  # on time, or the one catch-up run


def _start(runs: list[JobScheduleRun]) -> None:
    """Create the jobs of the runs to start (as their owners, checked like any submission) and
    insert every run row in one statement; the rows' unique (schedule, occurrence) refuses an
    occurrence already started, and the caller's savepoint then takes the jobs back too."""
    starting = []
    for run in runs:
        if run.skipped:
            continue
        if not run.schedule.owner.is_active:  # a former user's schedules start nothing, whatever the type
            run.error = ScheduleOwnerInactiveError().message
            continue
        starting.append(run)
    outcomes = jobs_create(
        requests=[
            JobRequest(type=run.schedule.type, data=run.schedule.data, user=run.schedule.owner) for run in starting
        ]
    )
    for run, outcome in zip(starting, outcomes, strict=True):
        if isinstance(outcome, ApplicationError):  # the owner lost the right, or the job type changed
            run.error = outcome.message
        else:
            run.job = outcome
    JobScheduleRun.objects.bulk_create(runs)
