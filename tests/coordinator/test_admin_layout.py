"""The admin's lists at a desktop width (1440 px, sidebar open) and on a phone (390 px): no cell is
cut off at the right on a desktop, and a phone still shows each list's key columns."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from tests.progress.conftest import admin_login, serve_platform

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# list URL -> the columns a phone must still show (by the admin's `field-<name>` cell class)
LISTS = {
    "/admin/farm/run/": ["name", "progress"],
    "/admin/farm/task/": ["task", "status_shown"],
    "/admin/farm/worker/": ["hostname", "state"],
    "/admin/jobs/job/": ["type", "status_badge"],
    "/admin/jobs/jobfile/": ["filename"],
    "/admin/pool/device/": ["name", "online_badge"],
    "/admin/pool/task/": ["title_shown", "state_summary"],
    "/admin/pool/message/": ["type", "title"],
    "/admin/progress/progresstopic/": ["name", "percent"],
}


def _seed(admin) -> None:
    from farm import services as farm
    from jobs.models import Job, JobFile
    from jobs.services import job_create
    from pool.services import device_create, heartbeat_record, response_create, task_create
    from progress.services import progress_publish

    run = farm.run_create(owner=admin, num_tasks=100_000, name="nightly render of the whole catalogue")
    worker = farm.worker_register(
        owner=admin, uuid="5f0c1d2e3a4b5c6d7e8f90a1b2c3d4e5f6a7b8c9", hostname="render-node-0042.example", pid=31337
    )
    farm.tasks_claim(run=run, worker=worker, limit=3)
    devices = [device_create(name=f"sensor-{i:04d}", kind="thermometer", validated=True)[0] for i in range(3)]
    heartbeat_record(device=devices[0])
    task = task_create(user=admin, to="device:*", title="update the firmware to 4.2.1 and reboot afterwards")
    response_create(device=devices[0], parent_id=task.msg_id, status="progress", body="half way")
    job = job_create(type="csv_export", data={}, user=admin)
    now = timezone.now()
    Job.objects.filter(pk=job.pk).update(
        status="failure",
        worker="render-node-0042.example-31337:0a1b2c3d-4e5f-6789-abcd-ef0123456789",
        error="OSError: [Errno 28] No space left on device: '/var/lib/coordinator/exports/x.csv'",
        started_at=now - timedelta(minutes=3),
        finished_at=now,
        progress=62.5,
    )
    JobFile.objects.create(
        filename="export-2026-12-06T22-00-00-0a1b2c3d4e5f.csv", owner=admin, format="csv", size=123_456_789, job=job
    )
    progress_publish(topic="stream:7", kind="new", text="copying the archive to cold storage", owner_id=None)


@pytest.fixture
def pages(transactional_db, socket_dir, browser, admin):
    _seed(admin)
    with serve_platform(socket_dir) as base:
        yield base, browser


OVERFLOW = """() => {
  const width = document.documentElement.clientWidth;
  return Array.from(document.querySelectorAll('#result_list td, #result_list th'))
    .filter(cell => cell.getBoundingClientRect().right > width + 1)
    .map(cell => cell.className);
}"""


def test_no_list_cell_is_cut_off_at_1440_px_with_the_sidebar_open(pages, admin) -> None:
    base, browser = pages
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    admin_login(page, base, admin)
    cut_off = {}
    for url in LISTS:
        page.goto(base + url)
        assert page.is_visible("#nav-sidebar"), url
        cut_off[url] = page.evaluate(OVERFLOW)
    assert cut_off == {url: [] for url in LISTS}


def test_a_phone_keeps_each_lists_key_columns_in_view(pages, admin) -> None:
    base, browser = pages
    page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
    admin_login(page, base, admin)
    out_of_view = []
    for url, columns in LISTS.items():
        page.goto(base + url)
        for column in columns:
            box = page.eval_on_selector(
                f"#result_list tbody tr:first-child .field-{column}", "c => c.getBoundingClientRect().toJSON()"
            )
            if not (box["left"] >= 0 and box["right"] <= 390 + 1):
                out_of_view.append((url, column, round(box["left"]), round(box["right"])))
    assert out_of_view == []
