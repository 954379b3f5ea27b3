"""Schedules with an injected clock: time zones, first runs, firing, missed runs, the once-only guard."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from coordinator.errors import ApplicationError
from coordinator.models import User
from jobs.models import Job, JobSchedule, JobScheduleRun
from jobs.schedules import schedule_create, schedule_next_runs, schedule_update, schedules_fire_due

pytestmark = pytest.mark.django_db

ADD = {"type": "test.main.add", "data": {"x": 1, "y": 2}}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_a_schedule_created_at_23_59_in_paris_runs_tomorrow_at_23_59_paris_time(user: User) -> None:
    # 23:59:30 in Paris is 22:59:30 UTC: already past today's 23:59, and still "today" in UTC.
    late = schedule_create(
        owner=user, cron="59 23 * * *", timezone="Europe/Paris", now=at("2026-12-07 22:59:30"), **ADD
    )
    assert late.next_run_at == at("2026-12-08 22:59")
    assert schedule_next_runs(late) == [at(f"2026-12-{day:02d} 22:59") for day in range(8, 13)]
    # A minute earlier, today's 23:59 Paris is still ahead.
    early = schedule_create(
        owner=user, cron="59 23 * * *", timezone="Europe/Paris", now=at("2026-12-07 22:58:30"), **ADD
    )
    assert early.next_run_at == at("2026-12-07 22:59")
    # East of UTC the local date is already tomorrow: 23:59:30 in Tokyo is 14:59:30 UTC.
    tokyo = schedule_create(owner=user, cron="59 23 * * *", timezone="Asia/Tokyo", now=at("2026-12-07 14:59:30"), **ADD)
    assert tokyo.next_run_at == at("2026-12-08 14:59")


def test_a_due_schedule_starts_one_job_as_its_owner_and_moves_on(user: User) -> None:
    schedule = schedule_create(owner=user, cron="*/5 * * * *", now=at("2026-12-07 10:01"), **ADD)
    assert schedule.next_run_at == at("2026-12-07 10:05")
    assert schedules_fire_due(now=at("2026-12-07 10:04:59")) == 0
    assert schedules_fire_due(now=at("2026-12-07 10:05:00")) == 1
    run = JobScheduleRun.objects.get()
    assert (run.occurrence, run.job.type, run.job.created_by, run.job.data) == (
        at("2026-12-07 10:05"),
        "test.main.add",
        user,
        {"x": 1, "y": 2},
    )
    schedule.refresh_from_db()
    assert schedule.next_run_at == at("2026-12-07 10:10")
    assert schedules_fire_due(now=at("2026-12-07 10:05:01")) == 0


def test_the_same_occurrence_never_starts_twice(user: User) -> None:
    schedule = schedule_create(owner=user, interval_seconds=60, now=at("2026-12-07 10:00"), **ADD)
    schedules_fire_due(now=at("2026-12-07 10:01"))
    # A second cluster that read the schedule before the first one moved it on fires it again:
    JobSchedule.objects.filter(pk=schedule.pk).update(next_run_at=at("2026-12-07 10:01"))
    schedules_fire_due(now=at("2026-12-07 10:01"))
    assert JobScheduleRun.objects.count() == 1 and Job.objects.count() == 1


@pytest.mark.parametrize(("missed", "jobs"), [("skip", 0), ("catch_up", 1)])
def test_missed_runs_are_skipped_or_caught_up_once(user: User, missed: str, jobs: int) -> None:
    schedule = schedule_create(owner=user, interval_seconds=60, missed=missed, now=at("2026-12-07 10:00"), **ADD)
    # No cluster ran for an hour: 60 occurrences went by.
    schedules_fire_due(now=at("2026-12-07 11:00:30"))
    assert Job.objects.count() == jobs and JobScheduleRun.objects.count() == 1
    assert JobScheduleRun.objects.get().skipped is (missed == "skip")
    schedule.refresh_from_db()
    assert schedule.next_run_at == at("2026-12-07 11:01")  # on the grid, after now


def test_a_once_schedule_runs_once(user: User) -> None:
    schedule = schedule_create(owner=user, run_at=at("2026-12-07 12:00"), now=at("2026-12-07 10:00"), **ADD)
    assert schedule_next_runs(schedule) == [at("2026-12-07 12:00")]
    schedules_fire_due(now=at("2026-12-07 12:00:01"))
    schedule.refresh_from_db()
    assert schedule.next_run_at is None and schedule_next_runs(schedule) == []
    assert schedules_fire_due(now=at("2026-12-08 12:00")) == 0 and Job.objects.count() == 1


def test_pausing_and_changing_the_timing(user: User) -> None:
    schedule = schedule_create(owner=user, interval_seconds=60, now=at("2026-12-07 10:00"), **ADD)
    schedule_update(schedule=schedule, enabled=False, now=at("2026-12-07 10:00:30"))
    assert schedule_next_runs(schedule) == [] and schedules_fire_due(now=at("2026-12-07 10:05")) == 0
    schedule_update(
        schedule=schedule, enabled=True, cron="0 6 * * 1", timezone="America/New_York", now=at("2026-12-07 10:05")
    )
    schedule.refresh_from_db()
    assert (schedule.interval_seconds, schedule.next_run_at) == (
        None,
        at("2026-12-07 11:00"),
    )  # Monday 06:00 in New York


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"cron": "* * * * *", "interval_seconds": 60}, "invalid_schedule"),
        ({}, "invalid_schedule"),
        ({"cron": "61 * * * *"}, "invalid_schedule"),
        ({"cron": "* * * * * *"}, "invalid_schedule"),
        ({"cron": "0 0 31 2 *"}, "invalid_schedule"),  # well-formed, but no 31 February ever comes
        ({"cron": "* * * * *", "timezone": "Mars/Olympus"}, "invalid_schedule"),
        ({"interval_seconds": 0}, "invalid_schedule"),
        ({"interval_seconds": 60, "data": {"x": "one"}}, "invalid_job_arguments"),
        ({"interval_seconds": 60, "type": "nope"}, "unknown_job_type"),
        ({"interval_seconds": 60, "type": "test.main.myProtectedTask"}, "job_not_allowed"),
    ],
)
def test_bad_schedules_are_refused_like_bad_jobs(user: User, fields: dict, code: str) -> None:
    with pytest.raises(ApplicationError) as refused:
        schedule_create(owner=user, **{**ADD, **fields})
    assert refused.value.code == code and not JobSchedule.objects.exists()


def protected_schedule_of_a_demoted_admin(admin: User) -> JobSchedule:
    """A minutely schedule of a protected type whose owner has since lost the admin role."""
    schedule = schedule_create(
        owner=admin,
        type="test.main.myProtectedTask",
        data={"x": 1, "y": 2},
        interval_seconds=60,
        now=at("2026-12-07 10:00"),
    )
    User.objects.filter(pk=admin.pk).update(role="user", is_superuser=False)
    return schedule


def test_a_run_whose_owner_lost_the_right_is_recorded_not_started(admin: User) -> None:
    protected_schedule_of_a_demoted_admin(admin)
    schedules_fire_due(now=at("2026-12-07 10:01"))
    run = JobScheduleRun.objects.get()
    assert run.job is None and "permission" in run.error and not Job.objects.exists()


def test_a_deactivated_owners_schedule_starts_nothing_even_of_an_open_job_type(user: User) -> None:
    # test.main.add needs no permission and no sign-in: only the owner's deactivation can stop it.
    schedule_create(owner=user, interval_seconds=60, now=at("2026-12-07 10:00"), **ADD)
    User.objects.filter(pk=user.pk).update(is_active=False)
    schedules_fire_due(now=at("2026-12-07 10:01"))
    run = JobScheduleRun.objects.get()
    assert run.job is None and "deactivated" in run.error and not Job.objects.exists()


def test_one_user_cannot_own_more_schedules_than_the_cap(user: User, master: User, settings) -> None:
    settings.SCHEDULES_PER_OWNER = 2
    for _ in range(2):
        schedule_create(owner=user, interval_seconds=60, **ADD)
    with pytest.raises(ApplicationError) as refused:
        schedule_create(owner=user, interval_seconds=60, **ADD)
    assert refused.value.code == "too_many_schedules" and refused.value.status_code == 409
    assert JobSchedule.objects.filter(owner=user).count() == 2
    schedule_create(owner=master, interval_seconds=60, **ADD)  # the cap is each user's own


def test_a_schedule_may_not_run_more_often_than_the_shortest_interval(user: User, client_for) -> None:
    """One-second schedules let one user start 50 exports a second for good (the fifth pass)."""
    with pytest.raises(ApplicationError) as refused:
        schedule_create(owner=user, interval_seconds=1, **ADD)
    assert refused.value.code == "invalid_schedule" and refused.value.extra == {"field": "interval_seconds"}
    answer = client_for(user).post(
        "/v1/schedules", {"type": "json_export", "data": {}, "interval_seconds": 1}, format="json"
    )
    assert answer.status_code == 400 and answer.json()["extra"]["field"] == "interval_seconds"
    assert not JobSchedule.objects.exists()
    schedule_create(owner=user, interval_seconds=60, **ADD)  # a cron's minute is the shortest


def test_a_late_occurrence_is_run_not_taken_for_a_missed_one(user: User) -> None:
    # 10,000 schedules due at once take a while to fire: a daily run fired 90 s late still runs.
    schedule = schedule_create(owner=user, cron="0 6 * * *", now=at("2026-12-07 05:00"), **ADD)
    schedules_fire_due(now=at("2026-12-07 06:01:30"))
    run = JobScheduleRun.objects.get()
    assert not run.skipped and run.job is not None
    schedule.refresh_from_db()
    assert schedule.next_run_at == at("2026-12-08 06:00")


def test_a_batch_of_due_schedules_starts_every_occurrence_once_even_when_one_was_already_started(
    user: User, admin: User, django_capture_on_commit_callbacks
) -> None:
    from django_q.models import OrmQ

    mine = [schedule_create(owner=user, interval_seconds=60, now=at("2026-12-07 10:00"), **ADD) for _ in range(5)]
    protected = protected_schedule_of_a_demoted_admin(admin)
    # Another cluster already started the third schedule's 10:01 (its row is the guard).
    JobScheduleRun.objects.create(schedule=mine[2], occurrence=at("2026-12-07 10:01"))
    with django_capture_on_commit_callbacks(execute=True):
        assert schedules_fire_due(now=at("2026-12-07 10:01:02")) == 6
    runs = {run.schedule_id: run for run in JobScheduleRun.objects.all()}
    assert len(runs) == 6 and JobScheduleRun.objects.count() == 6
    assert runs[mine[2].pk].job is None  # the other cluster's row, untouched: no second job
    started = [runs[schedule.pk].job for schedule in mine if schedule is not mine[2]]
    assert all(job is not None and job.created_by == user for job in started)
    assert runs[protected.pk].job is None and "permission" in runs[protected.pk].error
    assert Job.objects.count() == 4 and OrmQ.objects.count() == 4  # each started job queued once
    assert {schedule.next_run_at for schedule in JobSchedule.objects.all()} == {at("2026-12-07 10:02")}
    assert schedules_fire_due(now=at("2026-12-07 10:01:30")) == 0


def test_firing_takes_at_most_one_batch_and_leaves_the_rest_due(user: User) -> None:
    for _ in range(5):
        schedule_create(owner=user, interval_seconds=60, now=at("2026-12-07 10:00"), **ADD)
    assert schedules_fire_due(now=at("2026-12-07 10:01"), limit=3) == 3
    assert schedules_fire_due(now=at("2026-12-07 10:01"), limit=3) == 2
    assert JobScheduleRun.objects.count() == Job.objects.count() == 5


@pytest.mark.django_db(transaction=True)
def test_concurrent_creates_cannot_pass_the_schedule_cap_together(user: User, settings) -> None:
    """The cap counts, then inserts: without a lock, creates that all counted below it together
    each added one (on PostgreSQL; SQLite takes its write lock at BEGIN)."""
    import threading

    from django.db import connection

    settings.SCHEDULES_PER_OWNER = 3
    start = threading.Barrier(8)
    refused: list[str] = []

    def create() -> None:
        start.wait()
        try:
            schedule_create(owner=user, interval_seconds=60, **ADD)
        except ApplicationError as exc:
            refused.append(exc.code)
        finally:
            connection.close()

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert JobSchedule.objects.filter(owner=user).count() == 3
    assert refused == ["too_many_schedules"] * 5
