"""The staff admin for runs, tasks and workers."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from coordinator.models import Role, User
from farm import services
from farm.models import Run, Task, Worker
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(fast_hashers: None) -> Client:
    client = Client()
    client.force_login(UserFactory(role=Role.ADMIN))
    return client


@pytest.fixture
def busy_run(farm_user: User) -> Run:
    run = services.run_create(owner=farm_user, num_tasks=4)
    worker = services.worker_register(owner=farm_user, uuid="w1", hostname="node7", pid=42)
    services.tasks_claim(run=run, worker=worker, limit=3)
    services.task_update(run=run, number=0, change=services.TaskChange(100.0, "done"))
    return run


def test_run_list_shows_live_progress(staff: Client, busy_run: Run) -> None:
    page = staff.get("/admin/farm/run/").content.decode()
    assert f'data-progress-topic="run:{busy_run.uuid}"' in page
    assert f'id="farm-run-progress-{busy_run.uuid}"' in page
    assert 'data-progress-width="percentDone"' in page and "width:25.00%" in page
    assert '<span data-progress-field="numDone">1</span>' in page
    assert '<span data-progress-field="numComputing">2</span>' in page
    assert '<span data-progress-field="numNotStarted">1</span>' in page
    assert "progress/live.js" in page


def test_run_list_counts_each_run_on_the_page_apart(staff: Client, busy_run: Run, farm_user: User) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    quiet = services.run_create(owner=farm_user, num_tasks=2)
    other = services.run_create(owner=farm_user, num_tasks=5)
    worker = services.worker_register(owner=farm_user, uuid="w2", hostname="node8", pid=43)
    services.tasks_claim(run=other, worker=worker, limit=5)
    services.tasks_complete(run=other, worker=worker, numbers=[0, 1, 2, 3, 4])
    with CaptureQueriesContext(connection) as queries:
        page = staff.get("/admin/farm/run/").content.decode()

    def progress_of(run: Run) -> str:
        start = page.index(f'id="farm-run-progress-{run.uuid}"')
        return page[start : page.index("</small>", start)]

    assert "width:25.00%" in progress_of(busy_run) and '"numComputing">2<' in progress_of(busy_run)
    assert "width:0.00%" in progress_of(quiet) and '"numNotStarted">2<' in progress_of(quiet)
    assert "width:100.00%" in progress_of(other) and '"numDone">5<' in progress_of(other)
    # One grouped count for the page's runs, not one per run, and none over every task of the farm.
    counts = [q["sql"] for q in queries.captured_queries if "farm_task" in q["sql"]]
    assert len(counts) == 1 and " IN (" in counts[0]


def test_run_page_lists_and_filters_tasks(staff: Client, busy_run: Run) -> None:
    url = f"/admin/farm/run/{busy_run.pk}/change/"
    page = staff.get(url).content.decode()
    assert 'id="farm-run-tasks"' in page and "data-progress-reload-fragment" in page
    assert all(f'id="farm-task-{n}"' in page for n in (0, 1, 2))
    assert "node7:42" in page
    done_only = staff.get(url, {"task_status": "done"}).content.decode()
    assert 'id="farm-task-0"' in done_only and 'id="farm-task-1"' not in done_only


def test_create_run_from_admin(staff: Client, farm_user: User) -> None:
    response = staff.post("/admin/farm/run/add/", {"owner": farm_user.pk, "num_tasks": 1000})
    assert response.status_code == 302
    run = Run.objects.get()
    assert run.owner == farm_user and run.num_tasks == 1000 and len(run.uuid) == 32
    assert not Task.objects.exists()


def test_restart_and_delete_actions(staff: Client, busy_run: Run) -> None:
    url = "/admin/farm/run/"
    staff.post(url, {"action": "restart_incomplete", "_selected_action": [busy_run.pk]})
    # Live workers compute 1 and 2: spared.
    assert sorted(Task.objects.values_list("status", flat=True)) == ["computing", "computing", "done"]
    Task.objects.filter(task=1).update(updated=timezone.now() - timedelta(days=1))  # its lease lapsed
    Task.objects.filter(task=2).update(status="failed")
    staff.post(url, {"action": "restart_incomplete", "_selected_action": [busy_run.pk]})
    assert sorted(Task.objects.values_list("task", "status")) == [(0, "done"), (1, "waiting"), (2, "failed")]
    staff.post(url, {"action": "restart_failed", "_selected_action": [busy_run.pk]})
    assert Task.objects.get(task=2).status == "waiting"
    staff.post(url, {"action": "restart_all", "_selected_action": [busy_run.pk]})
    assert set(Task.objects.values_list("status", "percent_completed")) == {("waiting", 0.0)}
    staff.post(url, {"action": "delete_selected", "_selected_action": [busy_run.pk], "post": "yes"})
    assert not Run.objects.exists() and not Task.objects.exists()


def test_worker_and_task_lists(staff: Client, busy_run: Run) -> None:
    workers = staff.get("/admin/farm/worker/").content.decode()
    assert "node7" in workers and "w1" in workers
    assert '<td class="field-tasks_done">1</td>' in workers
    assert '<td class="field-tasks_computing">2</td>' in workers
    assert Worker.objects.count() == 1
    worker = Worker.objects.get()
    assert "node7" in staff.get(f"/admin/farm/worker/{worker.pk}/change/").content.decode()
    tasks = staff.get("/admin/farm/task/", {"status__exact": "computing"}).content.decode()
    assert "computing" in tasks
    assert staff.get("/admin/farm/task/add/").status_code == 403


def test_pause_resume_and_controls_from_the_admin(staff: Client, busy_run: Run) -> None:
    url = "/admin/farm/run/"
    staff.post(url, {"action": "pause", "_selected_action": [busy_run.pk]})
    listing = staff.get(url, {"paused__exact": "1"}).content.decode()
    assert busy_run.uuid in listing and "paused" in listing
    worker = Worker.objects.get()
    assert services.tasks_claim(run=busy_run, worker=worker) == []  # the 4th task stays with the run
    staff.post(url, {"action": "resume", "_selected_action": [busy_run.pk]})
    assert [t.task for t in services.tasks_claim(run=busy_run, worker=worker)] == [3]
    change = staff.post(
        f"{url}{busy_run.pk}/change/", {"name": "nightly sweep", "labels": '["nightly", "cpu"]', "max_computing": "2"}
    )
    assert change.status_code == 302, change.content.decode()
    run = Run.objects.get()
    assert (run.name, run.labels, run.max_computing, run.num_tasks) == ("nightly sweep", ["nightly", "cpu"], 2, 4)
    found = staff.get(url, {"q": "nightly"}).content.decode()
    assert "nightly sweep" in found and "at most 2 computing" in found
    assert "nightly sweep" not in staff.get(url, {"q": "absent"}).content.decode()


def test_non_staff_cannot_open_the_farm_admin(farm_user: User) -> None:
    client = Client()
    client.force_login(farm_user)
    assert client.get("/admin/farm/run/").status_code == 302


def test_stuck_work_has_a_state_a_filter_and_a_count(staff: Client, farm_user: User, settings) -> None:
    settings.FARM_LEASE_SECONDS = 60
    run = services.run_create(owner=farm_user, num_tasks=6)
    silent = services.worker_register(owner=farm_user, uuid="silent", hostname="node1", pid=1)
    services.tasks_claim(run=run, worker=silent, limit=2)
    long_ago = timezone.now() - timedelta(minutes=10)
    Worker.objects.filter(pk=silent.pk).update(last_seen=long_ago)
    Task.objects.filter(run=run, task=0).update(updated=long_ago)  # held past its lease
    paused = services.run_create(owner=farm_user, num_tasks=2)
    Task.objects.create(run=paused, task=0, status=Task.Status.WAITING)
    Run.objects.filter(pk=paused.pk).update(paused=True)

    workers = staff.get("/admin/farm/worker/?state=lost").content.decode()
    assert "node1" in workers and 'data-live-expired-text="lost"' in workers and ">lost</span>" in workers
    assert "node1" not in staff.get("/admin/farm/worker/?state=alive").content.decode()
    past = staff.get("/admin/farm/task/?stuck=past_lease").content.decode()
    held = Task.objects.filter(status=Task.Status.COMPUTING, updated__lt=timezone.now() - timedelta(seconds=60))
    assert held.count() >= 1 and ">past lease</span>" in past
    unclaimed = staff.get("/admin/farm/task/?stuck=unclaimed").content.decode()
    assert f'<a href="/admin/farm/run/{paused.pk}/change/"' in unclaimed or str(paused) in unclaimed

    index = staff.get("/admin/").content.decode()
    for title in ("Farm workers alive", "Farm tasks past their lease", "Farm tasks nobody will claim", "Lease sweep"):
        assert title in index
    assert "never ran" in index  # no cluster ran the lease sweep in this test
    cards = {
        title: value
        for value, title in re.findall(r'<div class="value"[^>]*>([^<]+)</div>\s*<div>([^<]+)</div>', index)
    }
    assert cards["Farm workers alive"] == "0" and cards["Farm tasks past their lease"] == str(held.count())
    assert cards["Farm tasks nobody will claim"] == "1"
