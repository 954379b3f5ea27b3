"""Writes of `farm.services` a user sees: workers' finished-task counts, what deleting a run or a
worker leaves behind, attempts and failed tasks, restarts, run controls, the order of a run's events."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from django.db import connection, connections
from django.utils import timezone

from coordinator.models import User
from farm import selectors, services, throttle
from farm.errors import RunNotFoundError
from farm.models import Run, Task, Worker
from tests.farm.conftest import FakeClock

pytestmark = pytest.mark.django_db


def wait_until_a_session_waits_for_a_lock() -> None:
    """Return once another session of this database waits for a row lock (an event, not a delay);
    fails after a bound meant only for a thread that never gets there."""
    watcher = psycopg.connect(**connection.get_connection_params(), autocommit=True)
    try:
        deadline = time.monotonic() + 30
        while not watcher.execute("SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone()[0]:
            assert time.monotonic() < deadline, "nobody waits for the lock"
            time.sleep(0.01)
    finally:
        watcher.close()


def _done(worker: Worker) -> int:
    return Worker.objects.get(pk=worker.pk).tasks_done


def test_tasks_done_counts_every_way_a_task_finishes_and_only_once(farm_user: User) -> None:
    run = services.run_create(owner=farm_user, num_tasks=8)
    worker = services.worker_register(owner=farm_user, uuid="counted", hostname="h", pid=1)
    other = services.worker_register(owner=farm_user, uuid="other", hostname="h", pid=2)
    assert [t.task for t in services.tasks_claim(run=run, worker=worker, limit=6)] == [0, 1, 2, 3, 4, 5]
    assert services.tasks_claim(run=run, worker=other, limit=1)[0].task == 6
    done = services.TaskChange(status=Task.Status.DONE)

    # The holder's PUT.
    services.task_update(run=run, number=0, change=done, sender="counted")
    assert _done(worker) == 1
    # A PUT through the full path (here: without a worker), credited to the task's holder.
    services.task_update(run=run, number=1, change=done)
    assert _done(worker) == 2
    # Finishing an already finished task counts nothing.
    services.task_update(run=run, number=1, change=done)
    assert _done(worker) == 2
    # Batch completion counts what it finished, not what it refused (6 is the other worker's, 1 is done).
    assert services.tasks_complete(run=run, worker=worker, numbers=[2, 3, 6, 1]) == [2, 3]
    assert _done(worker) == 4
    assert services.tasks_complete(run=run, worker=worker, numbers=[4]) == [4]
    assert _done(worker) == 5 and _done(other) == 0
    # A task finished without ever being handed out has nobody to credit.
    services.task_update(run=run, number=7, change=done)
    assert _done(worker) == 5 and _done(other) == 0
    # A restart puts tasks back, but the work was done: the count stays.
    services.run_restart(run=run, what=services.Restart.ALL)
    assert _done(worker) == 5
    assert Task.objects.filter(status=Task.Status.DONE).count() == 0


def test_a_deleted_run_gets_no_new_task_rows(farm_user: User) -> None:
    run = services.run_create(owner=farm_user, num_tasks=10)
    worker = services.worker_register(owner=farm_user, uuid="w", hostname="h", pid=1)
    services.tasks_claim(run=run, worker=worker, limit=2)
    stale = Run.objects.get(pk=run.pk)  # what a request read before the delete committed
    services.run_delete(run=run)
    assert not Task.objects.exists()
    with pytest.raises(RunNotFoundError):
        services.task_get_or_materialise(run=stale, number=5)  # an out-of-order GET
    with pytest.raises(RunNotFoundError):
        services.task_update(run=stale, number=6, change=services.TaskChange(percent_completed=10.0))
    with pytest.raises(RunNotFoundError):
        services.tasks_claim(run=stale, worker=worker, limit=3)
    assert not Task.objects.exists()


def test_deleting_a_worker_keeps_its_tasks_without_it(farm_user: User) -> None:
    run = services.run_create(owner=farm_user, num_tasks=3)
    worker = services.worker_register(owner=farm_user, uuid="gone", hostname="h", pid=1)
    services.tasks_claim(run=run, worker=worker, limit=2)
    worker.delete()
    assert list(Task.objects.order_by("task").values_list("task", "worker")) == [(0, None), (1, None)]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("way", ["run_delete", "owner_deleted"])
def test_a_run_delete_waits_for_a_claim_holding_the_run_and_takes_its_rows_too(farm_user: User, way: str) -> None:
    """A claim locks the run row, then inserts; the delete locks the run row before deleting the
    tasks, so it sees what the claim committed (no foreign-key error). The same holds when the run
    goes because its owner's account is deleted (Django's cascade)."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite writes one transaction at a time")
    run = services.run_create(owner=farm_user, num_tasks=10)
    worker = services.worker_register(owner=farm_user, uuid="w", hostname="h", pid=1)
    claim = psycopg.connect(**connection.get_connection_params())
    try:
        claim.execute("SELECT id FROM farm_run WHERE id = %s FOR UPDATE", [run.pk])  # as hand-out locks it
        errors: list[BaseException] = []

        def delete() -> None:
            try:
                if way == "run_delete":
                    services.run_delete(run=run)
                else:
                    User.objects.get(pk=farm_user.pk).delete()
            except BaseException as exc:  # reported below
                errors.append(exc)
            finally:
                connections.close_all()

        deleting = threading.Thread(target=delete)
        deleting.start()
        wait_until_a_session_waits_for_a_lock()  # the delete, for the run row
        claim.execute(
            "INSERT INTO farm_task (run_id, task, status, percent_completed, worker_id, attempts, failure, "
            "started, updated) VALUES (%s, 0, 'computing', 0, %s, 1, '', now(), now())",
            [run.pk, worker.pk],
        )
        claim.commit()
        deleting.join(30)
        assert not deleting.is_alive() and errors == []
    finally:
        claim.close()
    assert not Run.objects.exists()
    assert not Task.objects.exists()


def test_finishing_a_task_of_a_run_that_goes_on_counts_nothing(farm_user: User, settings: Any) -> None:
    """Near the end of a run every finished task asks whether the run ended; the answer comes from the
    partial indexes, not from counting the run's rows, and the `end` event still goes out once."""
    from django.test.utils import CaptureQueriesContext

    from progress.models import ProgressEvent

    settings.FARM_PROGRESS_INTERVAL = 3600  # no throttled `msg` due: only the end may cost a count
    run = services.run_create(owner=farm_user, num_tasks=3)
    worker = services.worker_register(owner=farm_user, uuid="tail", hostname="h", pid=1)
    services.tasks_claim(run=run, worker=worker, limit=3)  # the counter is exhausted
    done = services.TaskChange(percent_completed=100.0, status=Task.Status.DONE)
    for number in (0, 1):
        with CaptureQueriesContext(connection) as queries:
            services.task_update(run=run, number=number, change=done, sender="tail")
        assert not [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]
    assert not ProgressEvent.objects.filter(topic=f"run:{run.uuid}", kind="end").exists()
    services.task_update(run=run, number=2, change=done, sender="tail")
    end = ProgressEvent.objects.get(topic=f"run:{run.uuid}", kind="end")
    assert end.state["numDone"] == 3 and end.state["percentDone"] == 100


@pytest.mark.django_db(transaction=True)
def test_a_claim_that_waited_for_a_run_delete_says_the_run_is_gone(farm_user: User) -> None:
    """The claim saw the run, then waited for its row while a delete held it: the worker is told the
    run is gone (404), not that no task is left (204)."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite writes one transaction at a time")
    run = services.run_create(owner=farm_user, num_tasks=10)
    worker = services.worker_register(owner=farm_user, uuid="w", hostname="h", pid=1)
    deleting = psycopg.connect(**connection.get_connection_params())
    outcome: list[object] = []

    def claim() -> None:
        try:
            outcome.append(services.tasks_claim(run=run, worker=worker, limit=1))
        except BaseException as exc:  # reported below
            outcome.append(exc)
        finally:
            connections.close_all()

    try:
        deleting.execute("SELECT id FROM farm_run WHERE id = %s FOR UPDATE", [run.pk])
        deleting.execute("DELETE FROM farm_run WHERE id = %s", [run.pk])
        claiming = threading.Thread(target=claim)
        claiming.start()
        wait_until_a_session_waits_for_a_lock()  # the claim, for the run row
        deleting.commit()
        claiming.join(30)
        assert not claiming.is_alive()
    finally:
        deleting.close()
    assert len(outcome) == 1 and isinstance(outcome[0], RunNotFoundError), outcome
    assert not Task.objects.exists()


def _lapse(run: Run) -> None:
    """Every computing task of the run: its worker has been silent past the lease."""
    Task.objects.filter(run=run, status=Task.Status.COMPUTING).update(updated=timezone.now() - timedelta(days=1))


def test_a_task_whose_lease_lapsed_max_attempts_times_fails(farm_user: User, settings: Any) -> None:
    from progress.models import ProgressEvent

    settings.FARM_MAX_ATTEMPTS = 3
    run = services.run_create(owner=farm_user, num_tasks=1)
    worker = services.worker_register(owner=farm_user, uuid="w", hostname="h", pid=1)
    for attempt in (1, 2, 3):
        (task,) = services.tasks_claim(run=run, worker=worker)
        assert (task.task, task.attempts) == (0, attempt)
        _lapse(run)
    assert services.tasks_claim(run=run, worker=worker) == []  # the 4th hand-out never happens
    task = Task.objects.get()
    assert (task.status, task.attempts, task.failure) == ("failed", 3, "lease lapsed 3 times")
    counts = selectors.run_counts(run=run)
    assert (counts.num_failed, counts.num_not_started) == (1, 0)
    end = ProgressEvent.objects.get(topic=services.run_topic(run), kind="end")
    assert end.text == "1 tasks failed" and end.state["numFailed"] == 1
    # The operator's restart of failed tasks gives them a fresh set of attempts.
    assert services.run_restart(run=run, what=services.Restart.FAILED) == 1
    assert services.tasks_claim(run=run, worker=worker)[0].attempts == 1


def test_the_sweep_fails_exhausted_tasks_and_returns_the_others(farm_user: User, settings: Any) -> None:
    settings.FARM_MAX_ATTEMPTS = 2
    run = services.run_create(owner=farm_user, num_tasks=2)
    worker = services.worker_register(owner=farm_user, uuid="w", hostname="h", pid=1)
    services.tasks_claim(run=run, worker=worker, limit=2)
    Task.objects.filter(task=0).update(attempts=2)
    _lapse(run)
    assert services.leases_expire() == 2
    assert list(Task.objects.order_by("task").values_list("status", "worker")) == [
        ("failed", worker.pk),
        ("waiting", None),
    ]


def test_restart_incomplete_spares_tasks_live_workers_compute(farm_user: User) -> None:
    run = services.run_create(owner=farm_user, num_tasks=5)
    worker = services.worker_register(owner=farm_user, uuid="w", hostname="h", pid=1)
    services.tasks_claim(run=run, worker=worker, limit=5)
    services.task_update(run=run, number=0, change=services.TaskChange(40.0), sender="w")  # live, at 40%
    services.task_update(run=run, number=1, change=services.TaskChange(100.0, "done"), sender="w")
    services.task_update(run=run, number=2, change=services.TaskChange(30.0, "done"), sender="w")  # done below 100
    Task.objects.filter(task=3).update(updated=timezone.now() - timedelta(days=1))  # lapsed
    Task.objects.filter(task=4).update(status="failed")
    assert services.run_restart(run=run, what=services.Restart.INCOMPLETE) == 2
    assert list(Task.objects.order_by("task").values_list("status", "percent_completed")) == [
        ("computing", 40.0),
        ("done", 100.0),
        ("waiting", 30.0),
        ("waiting", 0.0),
        ("failed", 0.0),
    ]
    assert services.run_restart(run=run, what=services.Restart.ALL) == 5  # the seed's: everything
    assert set(Task.objects.values_list("status", "percent_completed", "attempts")) == {("waiting", 0.0, 0)}


def test_a_paused_run_hands_out_nothing_until_resumed(farm_user: User) -> None:
    run = services.run_create(owner=farm_user, num_tasks=3)
    worker = services.worker_register(owner=farm_user, uuid="w", hostname="h", pid=1)
    services.run_control(run=run, controls=services.RunControls(paused=True))
    assert services.tasks_claim(run=run, worker=worker, limit=3) == []
    assert not Task.objects.exists()
    services.run_control(run=run, controls=services.RunControls(paused=False))
    assert [t.task for t in services.tasks_claim(run=run, worker=worker, limit=3)] == [0, 1, 2]


def test_max_computing_limits_hand_out_and_can_change_while_the_run_works(farm_user: User) -> None:
    run = services.run_create(owner=farm_user, num_tasks=10, max_computing=2)
    worker = services.worker_register(owner=farm_user, uuid="w", hostname="h", pid=1)
    assert [t.task for t in services.tasks_claim(run=run, worker=worker, limit=5)] == [0, 1]
    assert services.tasks_claim(run=run, worker=worker) == []
    services.tasks_complete(run=run, worker=worker, numbers=[0])
    assert [t.task for t in services.tasks_claim(run=run, worker=worker, limit=5)] == [2]
    services.run_control(run=run, controls=services.RunControls(max_computing=4))
    assert [t.task for t in services.tasks_claim(run=run, worker=worker, limit=5)] == [3, 4]
    services.run_control(run=run, controls=services.RunControls(clear_max_computing=True))
    assert len(services.tasks_claim(run=run, worker=worker, limit=5)) == 5


def test_reported_failures_are_final_and_end_the_run(farm_user: User) -> None:
    run = services.run_create(owner=farm_user, num_tasks=3)
    worker = services.worker_register(owner=farm_user, uuid="w", hostname="h", pid=1)
    other = services.worker_register(owner=farm_user, uuid="o", hostname="h", pid=2)
    services.tasks_claim(run=run, worker=worker, limit=2)
    services.tasks_claim(run=run, worker=other)
    assert services.tasks_fail(run=run, worker=worker, numbers=[1, 2], reason="segfault") == [1]  # 2 is o's
    assert Task.objects.get(task=1).failure == "segfault"
    services.tasks_complete(run=run, worker=worker, numbers=[0])
    services.tasks_complete(run=run, worker=other, numbers=[2])
    assert services.tasks_claim(run=run, worker=worker) == []
    counts = selectors.run_counts(run=run)
    assert (counts.num_done, counts.num_failed, counts.num_waiting) == (2, 1, 0)


def test_no_msg_after_a_runs_end_even_from_a_window_closing_later(
    farm_user: User, settings: Any, clock: FakeClock
) -> None:
    """A throttled `msg` whose window closes after the run ended sends nothing (the `end` is last)."""
    from progress.models import ProgressEvent

    settings.FARM_PROGRESS_INTERVAL = 3600
    settings.FARM_PROGRESS_TRAILING = True
    run = services.run_create(owner=farm_user, num_tasks=2)
    worker = services.worker_register(owner=farm_user, uuid="w", hostname="h", pid=1)
    services.tasks_claim(run=run, worker=worker, limit=2)  # the run's first msg; the window opens
    services.task_update(run=run, number=0, change=services.TaskChange(50.0), sender="w")  # scheduled
    services.task_update(run=run, number=0, change=services.TaskChange(100.0, "done"), sender="w")
    services.task_update(run=run, number=1, change=services.TaskChange(100.0, "done"), sender="w")
    # Another server process still has a change of the run inside its window (this one forgot its
    # own at the end): scheduling one here stands for it.
    assert not throttle.msg_due(run.pk, False, "task 0: computing 50%")
    clock.advance(7200)  # the window closed
    assert throttle.publish_due() == 1  # the trailing change was due, and found the run ended
    kinds = list(
        ProgressEvent.objects.filter(topic=services.run_topic(run)).order_by("id").values_list("kind", flat=True)
    )
    assert kinds[-1] == "end" and kinds.count("end") == 1
