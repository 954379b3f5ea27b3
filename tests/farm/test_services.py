"""Writes of `farm.services` a user sees in the admin: workers' finished-task counts, and what deleting
a run or a worker leaves behind (task rows carry no database-level foreign keys)."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest
from django.db import connection, connections

from coordinator.models import User
from farm import services
from farm.errors import RunNotFoundError
from farm.models import Run, Task, Worker

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
    assert services.task_update_held(user=farm_user, run_uuid=run.uuid, number=0, change=done, worker_uuid="counted")
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
    assert services.tasks_complete_by_uuid(user=farm_user, run_uuid=run.uuid, worker_uuid="counted", numbers=[4]) in (
        [4],
        None,
    )
    if Task.objects.get(run=run, task=4).status != Task.Status.DONE:  # SQLite: the caller's fallback
        services.tasks_complete(run=run, worker=worker, numbers=[4])
    assert _done(worker) == 5 and _done(other) == 0
    # A task finished without ever being handed out has nobody to credit.
    services.task_update(run=run, number=7, change=done)
    assert _done(worker) == 5 and _done(other) == 0
    # A restart puts tasks back, but the work was done: the count stays.
    services.run_restart(run=run, everything=True)
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
    assert services.tasks_claim(run=stale, worker=worker, limit=3) == []
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
    """The order that keeps orphans out without a foreign key: a claim locks the run row, then inserts;
    the delete locks the run row before deleting the tasks, so it sees what the claim committed. The
    same holds when the run goes because its owner's account is deleted (Django's cascade)."""
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
            "INSERT INTO farm_task (run_id, task, status, percent_completed, worker_id, started, updated) "
            "VALUES (%s, 0, 'computing', 0, %s, now(), now())",
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
            assert services.task_update_held(
                user=farm_user, run_uuid=run.uuid, number=number, change=done, worker_uuid="tail"
            )
        assert not [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]
    assert not ProgressEvent.objects.filter(topic=f"run:{run.uuid}", kind="end").exists()
    assert services.task_update_held(user=farm_user, run_uuid=run.uuid, number=2, change=done, worker_uuid="tail")
    end = ProgressEvent.objects.get(topic=f"run:{run.uuid}", kind="end")
    assert end.state["numDone"] == 3 and end.state["percentDone"] == 100


def test_a_token_id_names_the_one_worker_registered_with_it(farm_user: User) -> None:
    from farm import selectors

    services.worker_register(owner=farm_user, uuid="first", hostname="h", pid=1, token_id="t1")
    assert selectors.worker_uuid_for_token("t1") == "first"
    services.worker_register(owner=farm_user, uuid="second", hostname="h", pid=2, token_id="t1")
    assert list(Worker.objects.order_by("uuid").values_list("uuid", "token_id")) == [("first", "t1"), ("second", "t1")]
    assert selectors.worker_uuid_for_token("t1", cached=False) is None  # shared: it names neither


def test_a_uuid_registered_meanwhile_is_still_a_conflict_with_a_token(farm_user: User, monkeypatch: Any) -> None:
    """The unique uuid decides a concurrent registration of one uuid, with or without a token id."""
    from farm.errors import WorkerExistsError

    services.worker_register(owner=farm_user, uuid="taken", hostname="h", pid=1, token_id="t2")
    real_filter = Worker.objects.filter
    calls: list[dict[str, Any]] = []

    def missing_once(**kwargs: Any) -> Any:  # the first check runs before the other registration commits
        calls.append(kwargs)
        return real_filter(pk=-1) if len(calls) == 1 else real_filter(**kwargs)

    monkeypatch.setattr(Worker.objects, "filter", missing_once)
    with pytest.raises(WorkerExistsError):
        services.worker_register(owner=farm_user, uuid="taken", hostname="h", pid=2, token_id="t3")
    assert Worker.objects.count() == 1 and Worker.objects.get().token_id == "t2"


@pytest.mark.django_db(transaction=True)
def test_a_claim_that_waited_for_a_run_delete_says_the_run_is_gone(farm_user: User) -> None:
    """The claim saw the run, then waited for its row while a delete held it: the worker is told the
    run is gone (404), not that no task is left (204)."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite writes one transaction at a time")
    run = services.run_create(owner=farm_user, num_tasks=10)
    services.worker_register(owner=farm_user, uuid="w", hostname="h", pid=1)
    deleting = psycopg.connect(**connection.get_connection_params())
    outcome: list[object] = []

    def claim() -> None:
        try:
            outcome.append(services.tasks_claim_for(user=farm_user, run_uuid=run.uuid, worker_uuid="w", limit=1))
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
