"""Every work list opens on the newest rows, and saving a new device task lands on that task."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import reverse

from farm.services import run_create
from jobs.services import job_create
from pool.models import Message, Task
from pool.services import device_create, heartbeat_record, task_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(admin) -> Client:
    client = Client()
    client.force_login(admin)
    return client


def _change_links(page: str, model: str) -> list[str]:
    """The rows' change links in page order, each row once (a row may link from two cells)."""
    return list(dict.fromkeys(re.findall(rf'href="/admin/{model}/([^/"]+)/change/', page)))


def test_lists_open_on_the_newest_rows(staff: Client, admin) -> None:
    device, _ = device_create(name="d", validated=True)
    tasks = [task_create(user=admin, to=f"device:{device.pk}", title=f"t{i}") for i in range(3)]
    heartbeat_record(device=device)
    runs = [run_create(owner=admin, num_tasks=1, name=f"run {i}") for i in range(3)]
    jobs = [job_create(type="noop", data={}, user=admin) for _ in range(3)]

    pool_tasks = _change_links(staff.get(reverse("admin:pool_task_changelist")).content.decode(), "pool/task")
    assert pool_tasks[:3] == [str(t.pk) for t in reversed(tasks)]
    messages = _change_links(staff.get(reverse("admin:pool_message_changelist")).content.decode(), "pool/message")
    newest = list(Message.objects.order_by("-seq").values_list("pk", flat=True))
    assert messages[: len(newest)] == [str(pk) for pk in newest] and len(newest) == 4  # 3 tasks, a heartbeat
    farm_runs = _change_links(staff.get(reverse("admin:farm_run_changelist")).content.decode(), "farm/run")
    assert farm_runs == [str(r.pk) for r in reversed(runs)]
    job_rows = _change_links(staff.get(reverse("admin:jobs_job_changelist")).content.decode(), "jobs/job")
    assert job_rows == [str(j.pk) for j in reversed(jobs)]


def test_farm_runs_show_their_name_first_and_the_uuid_shortened(staff: Client, admin) -> None:
    run = run_create(owner=admin, num_tasks=1, name="nightly render")
    page = staff.get(reverse("admin:farm_run_changelist")).content.decode()
    header = re.findall(r'<th scope="col" class="(?:sortable )?column-(\w+)', page)
    assert header[:2] == ["name", "progress"] and header[-1] == "uuid_short"
    assert page.index("nightly render") < page.index(f'title="{run.uuid}">{run.uuid[:8]}…')


def test_saving_a_new_task_lands_on_it(staff: Client, admin) -> None:
    device, _ = device_create(name="d", validated=True)
    for i in range(3):
        task_create(user=admin, to=f"device:{device.pk}", title=f"older {i}")
    response = staff.post(
        reverse("admin:pool_task_add"),
        {"target": "one", "devices": [device.pk], "title": "the new one", "body": "", "meta_json": ""},
    )
    new = Task.objects.get(title="the new one")
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:pool_task_change", args=[new.pk])
