"""Real `qcluster` processes: exactly-once with two clusters, timeouts, kill -9 recovery."""

from __future__ import annotations

import os
import signal
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from coordinator.models import User
from jobs.models import Job
from jobs.services import job_create
from tests.jobs.conftest import job_status, run_cluster, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _finished(ids: list[int]) -> bool:
    job_status(ids[0])
    return not Job.objects.filter(pk__in=ids, status__in=[Job.Status.FRESH, Job.Status.STARTED]).exists()


def test_two_clusters_run_each_job_exactly_once(user: User, export_root: Path, tmp_path: Path) -> None:
    record = tmp_path / "executions.txt"
    with run_cluster(export_root) as first, run_cluster(export_root) as second:
        ids = [job_create(type="tests.record", data={"path": str(record)}, user=user).pk for _ in range(60)]
        export = job_create(type="csv_export", data={"datasets": ["jobs"]}, user=user).pk
        slow = job_create(type="tests.timeout", data={}, user=user).pk
        wait_for(lambda: _finished([*ids, export, slow]), timeout=90)
        assert first.poll() is None and second.poll() is None
    jobs = Job.objects.filter(pk__in=ids)
    assert {job.status for job in jobs} == {Job.Status.SUCCESS}
    assert all(job.attempts == 1 for job in jobs)
    pids = record.read_text().split()
    assert len(pids) == len(ids)  # no job ran twice, none was lost
    # Work was shared: more than one worker process took jobs.
    assert len({job.worker for job in jobs}) > 1
    assert Job.objects.get(pk=export).status == Job.Status.SUCCESS
    timed_out = Job.objects.get(pk=slow)
    assert timed_out.status == Job.Status.FAILURE
    assert "Timed out" in timed_out.error


def _worker_pid(job: Job) -> int:
    # worker ids are `<host>-<pid>:<uuid>`
    assert job.worker
    return int(job.worker.split(":", 1)[0].rsplit("-", 1)[1])


def test_kill_9_of_a_worker_and_of_a_whole_cluster_is_recovered(user: User, export_root: Path, tmp_path: Path) -> None:
    marker = tmp_path / "first-attempt"
    with run_cluster(export_root) as cluster:
        interrupted = job_create(type="tests.sleep_retry", data={"seconds": 60.0, "marker": str(marker)}, user=user).pk
        cut_off = job_create(type="tests.sleep", data={"seconds": 60.0, "steps": 60}, user=user).pk
        wait_for(lambda: job_status(interrupted) == "started" and job_status(cut_off) == "started", timeout=60)
        wait_for(marker.exists)

        # One worker process dies mid-job: the cluster's own sweep notices the silent heartbeat
        # and the job runs again without using an attempt (its worker was lost, it did not fail).
        victim = Job.objects.get(pk=interrupted)
        os.kill(_worker_pid(victim), signal.SIGKILL)
        wait_for(lambda: job_status(interrupted) == "success", timeout=60)
        job = Job.objects.get(pk=interrupted)
        assert job.result == "attempt 1" and job.interruptions == 1
        assert job.worker != victim.worker

        # The whole cluster dies (master, pusher, workers): nobody is left to sweep.
        os.killpg(cluster.pid, signal.SIGKILL)
        cluster.wait()
    assert job_status(cut_off) == "started"
    with run_cluster(export_root):
        # The next cluster to start recovers it and runs it again (one attempt allowed, none used).
        wait_for(lambda: Job.objects.get(pk=cut_off).interruptions >= 1, timeout=60)
        wait_for(lambda: job_status(cut_off) == "started", timeout=60)
    job = Job.objects.get(pk=cut_off)
    assert job.attempts == 1 and job.max_attempts == 1


def test_a_delayed_job_is_started_by_the_brokers_wake_up_not_by_the_sweep(user: User, export_root: Path) -> None:
    # One sweep per 100 s: within the minute the test waits, only the broker's wake-up at the
    # job's time (told by its NOTIFY on PostgreSQL, seen by the poll on SQLite) can start it.
    with run_cluster(export_root, JOBS_STALE_SECONDS="600"):
        run_after = timezone.now() + timedelta(seconds=3)
        delayed = job_create(type="test.main.add", data={"x": 1, "y": 2}, user=user, run_after=run_after).pk
        wait_for(lambda: job_status(delayed) == "success", timeout=60)
    job = Job.objects.get(pk=delayed)
    assert job.result == 3 and job.started_at is not None and job.started_at >= run_after


def _descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        with open(f"/proc/{pid}/stat") as handle:
            pid = int(handle.read().rsplit(")", 1)[1].split()[1])
    return False


def test_a_long_job_on_exports_never_delays_a_default_job(user: User, export_root: Path, tmp_path: Path) -> None:
    marker = tmp_path / "export-may-end"
    # One worker each: the export holds its cluster's only worker until the marker appears.
    with (
        run_cluster(export_root, "--queue", "exports", Q_WORKERS="1") as exports,
        run_cluster(export_root, "--queue", "default", Q_WORKERS="1") as default,
    ):
        long = job_create(type="tests.export_until", data={"marker": str(marker)}, user=user).pk
        wait_for(lambda: job_status(long) == "started", timeout=60)
        quick = [job_create(type="test.main.add", data={"x": i, "y": 1}, user=user).pk for i in range(3)]
        wait_for(lambda: all(job_status(pk) == "success" for pk in quick), timeout=60)
        assert job_status(long) == "started"  # still running: the quick jobs never waited for it
        export_worker = _worker_pid(Job.objects.get(pk=long))
        assert _descends_from(export_worker, exports.pid) and not _descends_from(export_worker, default.pid)
        assert all(_descends_from(_worker_pid(job), default.pid) for job in Job.objects.filter(pk__in=quick))
        marker.touch()
        wait_for(lambda: job_status(long) == "success", timeout=60)


def test_max_running_holds_across_two_clusters(user: User, export_root: Path, tmp_path: Path) -> None:
    log = tmp_path / "exclusive.txt"
    with run_cluster(export_root), run_cluster(export_root):
        ids = [job_create(type="tests.exclusive", data={"path": str(log)}, user=user).pk for _ in range(6)]
        wait_for(lambda: _finished(ids), timeout=120)
    assert {job.status for job in Job.objects.filter(pk__in=ids)} == {Job.Status.SUCCESS}
    lines = log.read_text().split("\n")[:-1]
    # Four workers could run them at once; the limit of one makes starts and ends alternate.
    assert [line.split()[0] for line in lines] == ["start", "end"] * 6


def test_two_clusters_never_start_the_same_scheduled_occurrence_twice(
    user: User, export_root: Path, settings: Any
) -> None:
    from jobs.models import JobScheduleRun
    from jobs.schedules import schedule_create

    settings.SCHEDULES_MIN_INTERVAL_SECONDS = 1  # many occurrences in seconds

    schedules = [
        schedule_create(owner=user, type="test.main.add", data={"x": i, "y": 0}, interval_seconds=1) for i in range(20)
    ]
    with run_cluster(export_root), run_cluster(export_root):
        wait_for(lambda: JobScheduleRun.objects.filter(job__status="success").count() >= 100, timeout=90)
        for schedule in schedules:
            schedule.enabled = False
            schedule.save(update_fields=["enabled"])
    runs = list(JobScheduleRun.objects.values_list("schedule_id", "occurrence", "job_id"))
    assert len(runs) == len({(schedule_id, occurrence) for schedule_id, occurrence, _ in runs})
    # One job per occurrence started (a one-second schedule a busy cluster fell a period behind on
    # records that occurrence as skipped, without a job).
    started = [job_id for _, _, job_id in runs if job_id is not None]
    assert Job.objects.filter(type="test.main.add").count() == len(started) == len(set(started)) >= 100


def test_two_clusters_fire_a_batch_of_schedules_due_at_once_each_exactly_once(user: User, export_root: Path) -> None:
    from jobs.models import JobSchedule, JobScheduleRun

    # More than one firing batch (FIRE_BATCH), all due at the same moment: the clusters' brokers
    # take batches side by side (SKIP LOCKED on PostgreSQL) and each occurrence starts once.
    count = 650
    due = timezone.now() + timedelta(seconds=3)
    JobSchedule.objects.bulk_create(
        JobSchedule(owner=user, type="test.main.add", data={"x": i, "y": 1}, run_at=due, next_run_at=due)
        for i in range(count)
    )
    with run_cluster(export_root), run_cluster(export_root):
        wait_for(lambda: JobScheduleRun.objects.filter(job__status="success").count() >= count, timeout=180)
    runs = list(JobScheduleRun.objects.values_list("schedule_id", "job_id", "error"))
    assert len(runs) == count and len({schedule_id for schedule_id, _, _ in runs}) == count
    assert all(job_id is not None and not error for _, job_id, error in runs)
    jobs = Job.objects.filter(type="test.main.add")
    assert jobs.count() == count and {job.status for job in jobs} == {Job.Status.SUCCESS}
    assert sorted(job.result for job in jobs) == list(range(1, count + 1))  # each schedule's own arguments
    assert not JobSchedule.objects.exclude(next_run_at=None).exists()  # a once schedule is done
