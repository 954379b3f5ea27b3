"""End to end with the published `taskfarm-worker==0.4.0` client against a live granian (the production WSGI server)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import taskfarm_worker
from django.conf import settings
from taskfarm_worker import TaskFarm, TaskFarmWorker, tfRuns

from coordinator.models import User
from farm.models import Run, Task, Worker
from progress.models import ProgressEvent
from tests.factories import DEFAULT_PASSWORD, UserFactory
from tests.live import ROOT, run_wsgi_server, server_env

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

BIN = Path(sys.executable).parent


@pytest.fixture
def farm_owner(transactional_db: None) -> User:
    return UserFactory(email="scientist@example.com")


def start_worker(module: str, base: str, owner: User, run_uuid: str, *extra: str) -> subprocess.Popen[str]:
    """A worker process (`tests.farm.<module>`) on the run, its output piped back."""
    return subprocess.Popen(
        [sys.executable, "-m", f"tests.farm.{module}", base, owner.email, DEFAULT_PASSWORD, run_uuid, *extra],
        cwd=ROOT,
        env=server_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_client_version() -> None:
    assert taskfarm_worker.__version__ == "0.4.0"


def test_taskfarm_and_worker_end_to_end(live_server_url: str, farm_owner: User) -> None:
    base = live_server_url + "/api/"
    tf = TaskFarm(farm_owner.email, DEFAULT_PASSWORD, numTasks=5, url_base=base)
    assert len(tf.uuid) == 32 and tf.numTasks == 5
    assert tf.percentDone == 0 and tf.numWaiting == 0 and tf.numDone == 0 and tf.numComputing == 0
    assert [r["uuid"] for r in tfRuns(farm_owner.email, DEFAULT_PASSWORD, url_base=base)] == [tf.uuid]

    worker = TaskFarmWorker(farm_owner.email, DEFAULT_PASSWORD, tf.uuid, url_base=base)
    seen = []
    for task in worker.tasks:
        seen.append(task)
        worker.update(40)
        assert tf.getTaskInfo(task, "percentCompleted") == 40
        worker.update(100)
        worker.done()
        assert tf.getTaskInfo(task, "status") == "done"
    assert seen == [0, 1, 2, 3, 4]
    assert tf.numDone == 5 and tf.percentDone == 100
    info = tf.info("")
    assert info["numNotStarted"] == 0 and info["uuid"] == tf.uuid
    assert Worker.objects.get().last_seen >= Worker.objects.get().start

    tf.setTaskInfo(2, "percentCompleted", 30)
    tf.restart()
    assert tf.numWaiting == 1 and tf.getTaskInfo(2, "percentCompleted") == 30
    tf.restart(everything=True)
    assert tf.numWaiting == 5 and tf.percentDone == 0
    again = TaskFarm(farm_owner.email, DEFAULT_PASSWORD, uuid=tf.uuid, url_base=base)
    assert again.numTasks == 5
    tf.delete()
    assert not Run.objects.exists()
    with pytest.raises(RuntimeError, match="HTTP 404"):
        TaskFarm(farm_owner.email, DEFAULT_PASSWORD, uuid=tf.uuid, url_base=base)


def test_wrong_password_is_refused(live_server_url: str, farm_owner: User) -> None:
    with pytest.raises(RuntimeError, match="HTTP 401"):
        TaskFarm(farm_owner.email, "not-the-password", numTasks=1, url_base=live_server_url + "/api/")


def test_manage_tf_command_line(live_server_url: str, farm_owner: User) -> None:
    base = live_server_url + "/api/"
    tf = TaskFarm(farm_owner.email, DEFAULT_PASSWORD, numTasks=3, url_base=base)
    worker = TaskFarmWorker(farm_owner.email, DEFAULT_PASSWORD, tf.uuid, url_base=base)
    assert worker.task == 0
    worker.update(100)
    worker.done()

    def manage(*args: str) -> str:
        cmd = [str(BIN / "manageTF"), "-b", base, "-u", farm_owner.email, "-p", DEFAULT_PASSWORD, *args]
        return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=60).stdout

    run = Run.objects.get()
    assert manage("--list").split() == [str(run.pk), tf.uuid, "3"]
    assert manage("--info", tf.uuid).strip() == f"{run.pk} {tf.uuid} 3 (0,0,1) 33.333333333333336"
    manage("--reset-all", tf.uuid)
    assert tf.numWaiting == 1 and tf.numDone == 0
    manage("--delete", tf.uuid)
    assert not Run.objects.exists()


def test_eight_real_workers_race(transactional_db: None, farm_owner: User) -> None:
    """8 worker processes on one run: no number handed to two workers, every task done once."""
    num_tasks = 160
    with run_wsgi_server(workers=4) as live:
        base = live + "/api/"
        tf = TaskFarm(farm_owner.email, DEFAULT_PASSWORD, numTasks=num_tasks, url_base=base)
        procs = [start_worker("race_worker", base, farm_owner, tf.uuid) for _ in range(8)]
        outputs = [proc.communicate(timeout=240) for proc in procs]
        for proc, (_, err) in zip(procs, outputs, strict=True):
            assert proc.returncode == 0, err
        handed = Counter(int(line) for out, _ in outputs for line in out.split())
        assert [n for n, count in handed.items() if count > 1] == []
        assert sorted(handed) == list(range(num_tasks))
        assert sum(1 for out, _ in outputs if out.strip()) >= 2  # the work really was shared
        assert tf.numDone == num_tasks and tf.percentDone == 100
        # Four server processes sent the run's events, each throttling its own `msg`: once every
        # window still open at the end has closed, the `end` is still the run's last event.
        time.sleep(2 * settings.FARM_PROGRESS_INTERVAL)
        events = ProgressEvent.objects.filter(topic=f"run:{tf.uuid}").order_by("id")
        kinds = list(events.values_list("kind", flat=True))
        assert kinds[0] == "new" and kinds[-1] == "end" and kinds.count("end") == 1
    statuses = Counter(Task.objects.values_list("status", flat=True))
    assert statuses == {"done": num_tasks}
    assert Worker.objects.count() == 8
    # Each worker's count of finished tasks is what it printed, with 8 of them finishing at once.
    printed = {len(out.split()) for out, _ in outputs}
    assert sum(Worker.objects.values_list("tasks_done", flat=True)) == num_tasks
    assert set(Worker.objects.values_list("tasks_done", flat=True)) == printed


def test_max_computing_holds_with_eight_worker_processes(transactional_db: None, farm_owner: User) -> None:
    """8 batch workers asking for 3 tasks each on a run limited to 4 computing: no claim ever leaves
    more than 4 computing, and every task is done once."""
    limit, num_tasks = 4, 120
    with run_wsgi_server(workers=4) as live:
        base = live + "/api/"
        tf = TaskFarm(farm_owner.email, DEFAULT_PASSWORD, numTasks=num_tasks, url_base=base)
        Run.objects.filter(uuid=tf.uuid).update(max_computing=limit)
        procs = [start_worker("limit_worker", base, farm_owner, tf.uuid, f"limited-{n}") for n in range(8)]
        outputs = [proc.communicate(timeout=240) for proc in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    lines = [line.split() for out, _ in outputs for line in out.splitlines()]
    computing_seen = [int(line[-1]) for line in lines]
    handed = Counter(int(n) for line in lines for n in line[:-1])
    assert max(computing_seen) <= limit
    assert max(len(line) - 1 for line in lines) <= 3
    assert sorted(handed) == list(range(num_tasks)) and set(handed.values()) == {1}
    assert Counter(Task.objects.values_list("status", flat=True)) == {"done": num_tasks}


def test_deleting_a_run_while_real_workers_claim_leaves_no_task_rows(transactional_db: None, farm_owner: User) -> None:
    """The run's lock (and the foreign keys) keep claims from adding rows while and after the run is
    deleted."""
    with run_wsgi_server(workers=4) as live:
        base = live + "/api/"
        tf = TaskFarm(farm_owner.email, DEFAULT_PASSWORD, numTasks=100_000, url_base=base)
        procs = [start_worker("race_worker", base, farm_owner, tf.uuid) for _ in range(6)]
        try:
            deadline = time.monotonic() + 120
            while Task.objects.filter(status="done").count() < 60 and time.monotonic() < deadline:
                time.sleep(0.05)
            tf.delete()  # while the workers keep claiming
            outputs = [proc.communicate(timeout=120) for proc in procs]
        finally:
            for proc in procs:
                proc.kill()
    # Every worker stopped on the run's disappearance: a 404, or (a claim that ran into the delete)
    # no task left; nothing else.
    stops = [err.splitlines()[-1] if err.strip() else "" for _, err in outputs]
    assert all(
        "HTTP 404" in stop or (proc.returncode == 0 and not stop) for proc, stop in zip(procs, stops, strict=True)
    ), "\n".join(stops)
    assert sum(len(out.split()) for out, _ in outputs) >= 60
    assert not Run.objects.exists()
    assert not Task.objects.exists()


def test_lease_expiry_with_real_clients(transactional_db: None, farm_owner: User) -> None:
    """A worker silent past its lease loses the task to another; its late update gets a 409."""
    from datetime import timedelta

    from django.utils import timezone

    with run_wsgi_server(workers=2, FARM_LEASE_SECONDS="60") as live:
        base = live + "/api/"
        tf = TaskFarm(farm_owner.email, DEFAULT_PASSWORD, numTasks=1, url_base=base)
        slow = TaskFarmWorker(farm_owner.email, DEFAULT_PASSWORD, tf.uuid, url_base=base)
        fast = TaskFarmWorker(farm_owner.email, DEFAULT_PASSWORD, tf.uuid, url_base=base)
        assert slow.task == 0
        assert fast.task is None  # leased to `slow`
        Task.objects.update(updated=timezone.now() - timedelta(seconds=120))
        fast._task = None
        assert fast.task == 0  # the lease expired: handed out again
        with pytest.raises(RuntimeError, match="HTTP 409"):
            slow.update(50)
        fast.update(100)
        fast.done()
        assert tf.numDone == 1
        assert Task.objects.get().worker.uuid == fast.worker_uuid
        # Each worker is named by the cookie its session was given.
        assert slow.session.cookies["farm_worker"] == slow.worker_uuid
        assert fast.session.cookies["farm_worker"] == fast.worker_uuid
