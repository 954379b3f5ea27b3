"""Job lifecycle in-process: queueing, the guarded claim, outcomes, retry policy, cancel, recovery."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from django_q.models import OrmQ

from coordinator.models import User
from jobs import services
from jobs.context import JobContext
from jobs.errors import JobNotAllowedError, JobStateError, UnknownJobTypeError
from jobs.models import Job
from jobs.services import (
    job_cancel,
    job_claim,
    job_create,
    job_execute,
    job_report_progress,
    job_retry,
    jobs_queue_backlog,
    jobs_recover_stale,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Progress events published by the jobs app (contract 1), in order."""
    seen: list[dict[str, Any]] = []
    monkeypatch.setattr(services, "progress_publish", lambda **kw: seen.append(kw))
    return seen


def create(user: User | None, type: str, data: dict, capture) -> Job:
    with capture(execute=True):
        return job_create(type=type, data=data, user=user)


def test_create_commits_then_queues_once(user: User, django_capture_on_commit_callbacks) -> None:
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        job = job_create(type="test.main.add", data={"x": 1, "y": 2}, user=user)
        assert OrmQ.objects.count() == 0  # nothing queued before commit
    for callback in callbacks:
        callback()
    job.refresh_from_db()
    assert job.status == "fresh" and job.queued_at is not None
    assert OrmQ.objects.count() == 1
    # Queueing again (backlog command, sweep) never adds a second message.
    assert services.job_enqueue(job_id=job.pk) is False
    assert OrmQ.objects.count() == 1


def test_unknown_type_and_protected_types(user: User, master: User, admin: User) -> None:
    with pytest.raises(UnknownJobTypeError):
        job_create(type="nope", data={}, user=user)
    with pytest.raises(JobNotAllowedError):
        job_create(type="test.main.myProtectedTask", data={"x": 1, "y": 2}, user=user)
    with pytest.raises(JobNotAllowedError):
        job_create(type="tests.staff_only", data={}, user=user)
    job_create(type="tests.staff_only", data={}, user=master)  # role listed on the decorator
    job_create(type="test.main.myProtectedTask", data={"x": 1, "y": 2}, user=admin)  # admins always


def test_protected_type_through_the_django_permission(user: User) -> None:
    from django.contrib.auth.models import Permission

    from jobs.selectors import job_permissions_sync

    job_permissions_sync()
    user.user_permissions.add(Permission.objects.get(codename="run_test.main.myProtectedTask"))
    user = User.objects.get(pk=user.pk)  # fresh permission cache
    assert job_create(type="test.main.myProtectedTask", data={"x": 2, "y": 3}, user=user).status == "fresh"


def test_claim_is_guarded(user: User) -> None:
    job = job_create(type="test.main.add", data={"x": 1, "y": 2}, user=user)
    assert job_claim(job_id=job.pk, worker="a:1") is True
    assert job_claim(job_id=job.pk, worker="b:2") is False
    job.refresh_from_db()
    assert (job.status, job.worker, job.attempts) == ("started", "a:1", 1)
    assert job_execute(job_id=job.pk) == "skipped"  # a second delivery does nothing


def test_execute_success_records_result_and_publishes(user: User, events) -> None:
    job = job_create(type="test.main.add", data={"x": 40, "y": 2}, user=user)
    assert job_execute(job_id=job.pk) == "success"
    job.refresh_from_db()
    assert job.result == 42 and job.status == "success" and job.worker and job.finished_at
    kinds = [(e["kind"], e["topic"]) for e in events]
    assert ("new", f"job:{job.pk}") in kinds and kinds[-1] == ("end", f"job:{job.pk}")
    new = next(e for e in events if e["kind"] == "new")
    assert new["text"] == "test.main.add" and new["owner_id"] == user.pk
    assert events[-1]["text"] == ""


def test_failure_records_error_and_traceback(user: User, events) -> None:
    job = job_create(type="tests.fail", data={"message": "boom"}, user=user)
    assert job_execute(job_id=job.pk) == "failure"
    job.refresh_from_db()
    assert job.status == "failure" and job.error == "RuntimeError: boom" and "Traceback" in job.traceback
    assert events[-1]["kind"] == "end" and events[-1]["text"] == "RuntimeError: boom"


def test_result_must_be_json(user: User) -> None:
    job = job_create(type="tests.unserialisable", data={}, user=user)
    job_execute(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == "failure" and "not JSON serializable" in job.error


def test_retry_policy_runs_again_until_success(user: User, django_capture_on_commit_callbacks) -> None:
    job = create(user, "tests.flaky", {"succeed_on": 3}, django_capture_on_commit_callbacks)
    assert job_execute(job_id=job.pk) == "fresh"  # attempt 1 failed, re-queued at once
    job.refresh_from_db()
    assert job.error == "RuntimeError: attempt 1 fails" and job.queued_at is not None
    assert job_execute(job_id=job.pk) == "fresh"
    assert job_execute(job_id=job.pk) == "success"
    job.refresh_from_db()
    assert (job.attempts, job.result) == (3, 3)
    assert OrmQ.objects.count() == 3  # one queue message per attempt


def test_backoff_delays_the_next_attempt(user: User) -> None:
    job = job_create(type="tests.backoff", data={}, user=user)
    assert job_execute(job_id=job.pk) == "fresh"
    job.refresh_from_db()
    assert job.run_after > timezone.now() + timedelta(seconds=50)
    assert job.queued_at is None
    assert job_execute(job_id=job.pk) == "skipped"  # not before its time
    assert jobs_queue_backlog(grace_seconds=0) == []
    Job.objects.filter(pk=job.pk).update(run_after=timezone.now() - timedelta(seconds=1))
    assert jobs_queue_backlog(grace_seconds=0) == [job.pk]
    assert job_execute(job_id=job.pk) == "failure"  # attempt 2 of 2


def test_retry_only_from_failure_and_never_runs_inline(user: User, django_capture_on_commit_callbacks) -> None:
    job = job_create(type="tests.fail", data={"message": "x"}, user=user)
    with pytest.raises(JobStateError):
        job_retry(job=job)
    job_execute(job_id=job.pk)
    job.refresh_from_db()
    with django_capture_on_commit_callbacks(execute=True):
        job_retry(job=job)
    job.refresh_from_db()
    assert job.status == "fresh" and job.attempts == 0 and job.queued_at is not None


def test_cancel_fresh_now_and_started_at_next_report(user: User) -> None:
    fresh = job_create(type="test.main.add", data={"x": 1, "y": 1}, user=user)
    job_cancel(job=fresh)
    assert fresh.status == "failure" and "Cancelled" in fresh.error
    with pytest.raises(JobStateError):
        job_cancel(job=fresh)

    running = job_create(type="tests.sleep", data={"seconds": 0.0, "steps": 3}, user=user)
    assert job_claim(job_id=running.pk, worker="w:1")
    job_cancel(job=running)
    ctx = JobContext(
        job_id=running.pk, job_type="tests.sleep", user_id=user.pk, worker="w:1", record_progress=job_report_progress
    )
    from jobs.context import JobCancelled

    with pytest.raises(JobCancelled):
        ctx.report(10, "step", force=True)


def test_cancel_requested_stops_a_running_function(user: User) -> None:
    job = job_create(type="tests.sleep", data={"seconds": 0.0, "steps": 5}, user=user)
    Job.objects.filter(pk=job.pk).update(cancel_requested=True)  # asked before its first report
    original = services.job_claim

    def claim_keeping_request(**kw: Any) -> bool:
        ok = original(**kw)
        Job.objects.filter(pk=job.pk).update(cancel_requested=True)
        return ok

    services.job_claim = claim_keeping_request  # type: ignore[assignment]
    try:
        assert job_execute(job_id=job.pk) == "failure"
    finally:
        services.job_claim = original  # type: ignore[assignment]
    job.refresh_from_db()
    assert job.error.startswith("Cancelled") and job.attempts == 1


def test_recovery_runs_a_job_whose_worker_was_lost_again_without_using_an_attempt(user: User) -> None:
    lost = job_create(type="tests.sleep", data={"seconds": 1.0}, user=user)  # one attempt allowed
    worn = job_create(type="tests.sleep_retry", data={"seconds": 1.0, "marker": "/nonexistent"}, user=user)
    doomed = job_create(type="tests.sleep", data={"seconds": 1.0}, user=user)
    live = job_create(type="tests.sleep", data={"seconds": 1.0}, user=user)
    Job.objects.filter(pk__in=[worn.pk, doomed.pk]).update(interruptions=services.MAX_INTERRUPTIONS)
    for job in (lost, worn, doomed, live):
        assert job_claim(job_id=job.pk, worker=f"dead:{job.pk}")
    old = timezone.now() - timedelta(seconds=120)
    Job.objects.filter(pk__in=[lost.pk, worn.pk, doomed.pk]).update(heartbeat_at=old)
    assert sorted(jobs_recover_stale(stale_seconds=30)) == sorted([lost.pk, worn.pk, doomed.pk])
    for job in (lost, worn, doomed, live):
        job.refresh_from_db()
    # A lost worker is not the job's failure: it runs again, its attempt given back.
    assert lost.status == "fresh" and lost.attempts == 0 and lost.interruptions == 1
    assert "stopped responding" in lost.error
    # A job that has lost its workers MAX_INTERRUPTIONS times is handled as an error: retried
    # while it has attempts, failed after.
    assert worn.status == "fresh" and worn.attempts == 1 and "stopped responding" in worn.error
    assert doomed.status == "failure" and "stopped responding" in doomed.error
    assert live.status == "started"
    # The dead worker's late report of an outcome no longer counts.
    assert services.job_finish(job_id=doomed.pk, worker=f"dead:{doomed.pk}", ok=True, result=1) == "lost"
    assert services.job_finish(job_id=lost.pk, worker=f"dead:{lost.pk}", ok=True, result=1) == "lost"
    # An operator's retry starts the budgets afresh.
    services.job_retry(job=doomed)
    doomed.refresh_from_db()
    assert doomed.interruptions == 0 and doomed.attempts == 0


@pytest.mark.django_db(transaction=True)
def test_an_outcome_waits_out_a_database_outage_instead_of_running_the_job_twice(
    user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job ran; the database goes away before its outcome is stored. The worker holds the
    outcome (its heartbeat still beating) until the database is back, so the sweep never takes
    the job for a lost one and runs it again."""
    from django.db import OperationalError

    job = job_create(type="test.main.add", data={"x": 40, "y": 2}, user=user)
    real_finish = services.job_finish
    beating_while_down: list[bool] = []

    def finish_after_an_outage(**outcome: Any) -> str:
        if len(beating_while_down) < 2:
            beating_while_down.append(services._Heartbeat.get().current is not None)
            raise OperationalError("server closed the connection unexpectedly")
        return real_finish(**outcome)

    monkeypatch.setattr(services, "job_finish", finish_after_an_outage)
    assert job_execute(job_id=job.pk) == "success"
    job.refresh_from_db()
    assert (job.status, job.result, job.attempts) == ("success", 42, 1)
    assert beating_while_down == [True, True]
    assert services._Heartbeat.get().current is None


def test_manager_commands(user: User, capsys) -> None:
    never = job_create(type="test.main.add", data={"x": 1, "y": 1}, user=user)  # on_commit never ran
    Job.objects.filter(pk=never.pk).update(created_at=timezone.now() - timedelta(minutes=1))
    call_command("jobs_list_fresh")
    out = capsys.readouterr().out
    assert f"{never.pk}\ttest.main.add" in out and "never queued" in out
    call_command("jobs_backlog")
    assert f"Queued 1 job(s): {never.pk}" in capsys.readouterr().out
    assert OrmQ.objects.count() == 1
    call_command("jobs_sweep")
    assert "Recovered 0" in capsys.readouterr().out
    call_command("jobs_clear_fresh")
    assert "Deleted 1" in capsys.readouterr().out
    assert not Job.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_postgres_notifies_task_created_with_the_id_after_commit(user: User) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL only")
    from jobs.broker import ListenNotifyBroker

    broker = ListenNotifyBroker(list_key="notify-test")
    listener = broker._listen()
    try:
        job = job_create(type="test.main.add", data={"x": 1, "y": 1}, user=user)
        payloads = [n.payload for n in listener.notifies(timeout=10, stop_after=1)]
        assert payloads[:1] == [str(job.pk)]
        # The broker's own enqueue wakes it too (non-job async_task calls).
        from django_q.tasks import async_task

        async_task("math.floor", 1.5, broker=ListenNotifyBroker(list_key="notify-test"))
        assert broker._wait(30) is True
        taken = broker._take()
        assert len(taken) == 1
    finally:
        broker.close()


def test_progress_reports_are_published_on_the_job_topic(user: User, events) -> None:
    job = job_create(type="tests.sleep", data={"seconds": 0.0, "steps": 2}, user=user)
    assert job_execute(job_id=job.pk) == "success"
    msgs = [e for e in events if e["kind"] == "msg"]
    assert [e["text"] for e in msgs] == ["step 0", "step 1"]
    assert msgs[1]["state"] == {"percent": 50.0, "status": "started", "label": "started", "message": "step 1"}
    assert all(e["topic"] == f"job:{job.pk}" and e["owner_id"] == user.pk for e in events)
    job.refresh_from_db()
    assert job.progress == 100 and job.progress_message == "step 1"


def test_a_job_whose_queue_entry_was_lost_or_forgotten_is_queued_again(
    user: User, django_capture_on_commit_callbacks
) -> None:
    """The job table is the outbox: a fresh job handed out a minute ago that no cluster started is
    queued again — its entry gone (a worker whose dead connection failed the claim had taken it), or
    fetched by a cluster that was then killed (locked until Q_RETRY). One still waiting its turn in
    the queue, and one running, are left alone."""
    from jobs.services import _queued_job_id, jobs_requeue_undelivered

    jobs = [create(user, "test.main.add", {"x": n, "y": 1}, django_capture_on_commit_callbacks) for n in range(4)]
    lost, forgotten, waiting, running = jobs
    long_ago = timezone.now() - timedelta(minutes=5)
    Job.objects.filter(pk__in=[j.pk for j in jobs]).update(queued_at=long_ago)
    entries = {_queued_job_id(entry): entry for entry in OrmQ.objects.all()}
    entries[lost.pk].delete()
    OrmQ.objects.filter(pk=entries[forgotten.pk].pk).update(lock=timezone.now() + timedelta(minutes=10))
    assert job_claim(job_id=running.pk, worker="w1")

    assert jobs_requeue_undelivered() == [lost.pk, forgotten.pk]
    queued = sorted(_queued_job_id(entry) for entry in OrmQ.objects.all())
    assert queued == sorted([lost.pk, forgotten.pk, waiting.pk, running.pk])  # one entry each, none twice
    assert Job.objects.get(pk=lost.pk).queued_at > long_ago
    assert jobs_requeue_undelivered() == []  # just queued again: nothing more to do
    # The sweep includes it.
    assert set(services.jobs_sweep()) == {"recovered", "requeued", "queued", "removed_parts", "pruned"}


def test_a_delayed_job_stays_fresh_until_its_time_then_is_queued(
    user: User, django_capture_on_commit_callbacks
) -> None:
    later = timezone.now() + timedelta(seconds=60)
    with django_capture_on_commit_callbacks(execute=True):
        job = job_create(type="test.main.add", data={"x": 1, "y": 2}, user=user, run_after=later)
    assert OrmQ.objects.count() == 0 and services.jobs_queue_due() == []
    assert not job_claim(job_id=job.pk, worker="early")  # a stray delivery cannot start it early
    assert Job.objects.get(pk=job.pk).status == "fresh"
    Job.objects.filter(pk=job.pk).update(run_after=timezone.now() - timedelta(seconds=1))  # its time came
    assert services.jobs_queue_due() == [job.pk] and OrmQ.objects.count() == 1
    assert services.jobs_queue_due() == []  # a second broker doing the same queues nothing
    assert job_execute(job_id=job.pk) == "success"


def test_a_unique_key_answers_the_active_job_until_it_finishes(user: User, master: User) -> None:
    first = job_create(type="test.main.add", data={"x": 1, "y": 2}, user=user, unique_key="k")
    again = job_create(type="test.main.add", data={"x": 5, "y": 5}, user=master, unique_key="k")
    assert (first.existing, again.existing, again.pk) == (False, True, first.pk)
    other_type = job_create(type="test.main.subtract", data={"x": 1, "y": 2}, user=user, unique_key="k")
    assert not other_type.existing and Job.objects.count() == 2
    job_claim(job_id=first.pk, worker="w")
    assert job_create(type="test.main.add", data={"x": 1, "y": 2}, user=user, unique_key="k").pk == first.pk
    job_execute(job_id=other_type.pk)
    Job.objects.filter(pk=first.pk).update(status="failure")
    fresh = job_create(type="test.main.add", data={"x": 1, "y": 2}, user=user, unique_key="k")
    assert not fresh.existing and fresh.pk != first.pk
    # The failed holder cannot come back while the new one holds the key.
    with pytest.raises(JobStateError) as refused:
        job_retry(job=Job.objects.get(pk=first.pk))
    assert refused.value.status_code == 409 and Job.objects.get(pk=first.pk).status == "failure"


def test_a_job_runs_on_its_types_queue(user: User, django_capture_on_commit_callbacks) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        export = job_create(type="csv_export", data={}, user=user)
        quick = job_create(type="test.main.add", data={"x": 1, "y": 1}, user=user)
        chosen = job_create(type="test.main.add", data={"x": 1, "y": 1}, user=user, queue="reports")
    assert (export.queue, quick.queue, chosen.queue) == ("exports", "default", "reports")
    keys = dict(OrmQ.objects.values_list("key", "payload"))
    # The default queue is the site's cluster name; the others are their own cluster names.
    assert set(keys) == {"exports", "coordinator", "reports"}


def test_max_running_refuses_a_second_claim_and_defers_it(user: User, tmp_path) -> None:
    from jobs.registry import get_spec

    spec = get_spec("tests.exclusive")
    first = job_create(type="tests.exclusive", data={"path": str(tmp_path / "x")}, user=user)
    second = job_create(type="tests.exclusive", data={"path": str(tmp_path / "x")}, user=user)
    Job.objects.update(queued_at=timezone.now())
    assert job_claim(job_id=first.pk, worker="a", spec=spec)
    assert not job_claim(job_id=second.pk, worker="b", spec=spec)
    waiting = Job.objects.get(pk=second.pk)
    # Back to the delayed set: the brokers queue it again a moment later.
    assert waiting.status == "fresh" and waiting.queued_at is None and waiting.run_after > timezone.now()
    Job.objects.filter(pk=first.pk).update(status="success")
    Job.objects.filter(pk=second.pk).update(run_after=None)
    assert job_claim(job_id=second.pk, worker="b", spec=spec)


def test_a_batch_of_jobs_is_checked_one_by_one_and_queued_once_each(
    user: User, django_capture_on_commit_callbacks
) -> None:
    from jobs.services import JobRequest, jobs_create, jobs_enqueue

    with django_capture_on_commit_callbacks(execute=True):
        outcomes = services.jobs_create(
            requests=[
                JobRequest(type="test.main.add", data={"x": 1, "y": 2}, user=user),
                JobRequest(type="test.main.myProtectedTask", data={"x": 1, "y": 2}, user=user),  # not allowed
                JobRequest(type="test.main.add", data={"x": "one"}, user=user),  # bad arguments
                JobRequest(type="csv_export", data={}, user=user),
            ]
        )
    assert [type(outcome).__name__ for outcome in outcomes] == ["Job", "JobNotAllowedError", "ArgumentError", "Job"]
    created = [outcome for outcome in outcomes if isinstance(outcome, Job)]
    assert Job.objects.count() == 2
    assert {(job.type, job.queue, job.created_by, job.queued_at is not None) for job in Job.objects.all()} == {
        ("test.main.add", "default", user, True),
        ("csv_export", "exports", user, True),
    }
    # Each on its queue's cluster name, once: queueing the batch again adds nothing.
    assert sorted(OrmQ.objects.values_list("key", flat=True)) == ["coordinator", "exports"]
    assert jobs_enqueue(jobs=[services.QueuedJob(job.pk, job.type, job.queue) for job in created]) == []
    assert OrmQ.objects.count() == 2
    assert jobs_create(requests=[]) == []


def test_a_batch_queues_only_the_jobs_nobody_queued_meanwhile(user: User) -> None:
    from jobs.services import QueuedJob, jobs_enqueue

    with_backlog = [Job.objects.create(type="test.main.add", data={"x": i, "y": 0}) for i in range(3)]
    # The sweep of another cluster queued the middle one a moment ago.
    assert services.job_enqueue(job_id=with_backlog[1].pk) is True
    queued = jobs_enqueue(jobs=[QueuedJob(job.pk, job.type, job.queue) for job in with_backlog])
    assert queued == [with_backlog[0].pk, with_backlog[2].pk]
    assert OrmQ.objects.count() == 3
    assert sorted(services._queued_job_id(entry) for entry in OrmQ.objects.all()) == [job.pk for job in with_backlog]
