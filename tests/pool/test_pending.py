from __future__ import annotations

from datetime import timedelta

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from pool.models import Delivery, Device, Message
from pool.selectors import device_pending, device_pending_count
from pool.services import broadcasts_materialise, device_set_flags, response_create, task_cancel, task_create
from tests.pool.conftest import device_client


def pending_ids(device: Device) -> list[str]:
    return [m["id"] for m in device_client(device).get("/pool/pending").json()]


def answer(device: Device, task: Message, status: str) -> int:
    return (
        device_client(device)
        .post("/pool/response", {"parent_id": task.msg_id, "status": status}, format="json")
        .status_code
    )


def test_direct_task_is_pending_only_for_its_device_until_done(make_device, master):
    d1, d2 = make_device("a"), make_device("b")
    task = task_create(user=master, to=f"device:{d1.pk}")
    assert pending_ids(d1) == [task.msg_id]
    assert pending_ids(d2) == []
    assert answer(d1, task, "progress") == 201
    assert pending_ids(d1) == [task.msg_id]
    assert answer(d1, task, "failed") == 201
    assert pending_ids(d1) == []


def test_broadcast_completes_per_device(make_device, master):
    d1, d2, d3 = make_device("a"), make_device("b"), make_device("c")
    task = task_create(user=master, to="device:*")
    for d in (d1, d2, d3):
        assert pending_ids(d) == [task.msg_id]
    assert answer(d1, task, "done") == 201
    assert pending_ids(d1) == []
    assert pending_ids(d2) == [task.msg_id] and pending_ids(d3) == [task.msg_id]
    # A device may answer a broadcast before ever fetching it.
    assert answer(d3, task, "done") == 201
    assert pending_ids(d3) == []
    assert answer(d3, task, "done") == 409


def test_list_task_completes_per_device_and_excludes_others(make_device, master):
    d1, d2, d3 = make_device("a"), make_device("b"), make_device("c")
    task = task_create(user=master, to=f"device:[{d1.pk},{d2.pk}]")
    assert pending_ids(d3) == []
    assert answer(d3, task, "done") == 404
    assert answer(d2, task, "done") == 201
    assert pending_ids(d1) == [task.msg_id] and pending_ids(d2) == []


def test_broadcast_reaches_devices_validated_later(make_device, master):
    late = make_device("late", validated=False)
    task = task_create(user=master, to="device:*")
    assert device_client(late).get("/pool/pending").status_code == 403
    device_set_flags(devices=[late], validated=True)
    assert pending_ids(late) == [task.msg_id]
    newcomer = make_device("newcomer")  # created after the task
    assert pending_ids(newcomer) == [task.msg_id]


def test_broadcast_committed_behind_the_watermark_is_still_found(device, master):
    pending_ids(device)  # sets the watermark
    task = task_create(user=master, to="device:*")
    # As if its transaction had started before the watermark moved (slow commit).
    Message.objects.filter(pk=task.pk).update(ts=timezone.now() - timedelta(seconds=30))
    assert pending_ids(device) == [task.msg_id]


def test_expired_and_cancelled_tasks_are_pending_for_nobody(make_device, master):
    d1, d2 = make_device("a"), make_device("b")
    soon = task_create(user=master, to="device:*", expires_at=timezone.now() + timedelta(hours=1))
    direct = task_create(user=master, to=f"device:[{d1.pk},{d2.pk}]")
    keep = task_create(user=master, to=f"device:{d1.pk}")
    assert pending_ids(d1) == [soon.msg_id, direct.msg_id, keep.msg_id]
    assert soon.meta["expires_at"].endswith("Z")

    Message.objects.filter(pk=soon.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert task_cancel(task=direct) is True
    assert task_cancel(task=direct) is False
    assert pending_ids(d1) == [keep.msg_id]
    assert pending_ids(d2) == []
    assert answer(d2, direct, "done") == 409
    assert answer(d1, soon, "done") == 409
    late = make_device("late")
    assert pending_ids(late) == []  # the expired broadcast does not reach newcomers either
    assert device_pending_count(device=d1) == 1


def test_pending_is_oldest_first(device, master):
    tasks = [task_create(user=master, to=f"device:{device.pk}", title=str(i)) for i in range(5)]
    assert pending_ids(device) == [t.msg_id for t in tasks]


def test_pending_cost_does_not_grow_with_history(make_device, master):
    """The number of queries is the same with 1 or 80 answered tasks and broadcasts in the past."""
    device, other = make_device("a"), make_device("b")

    def queries() -> int:
        broadcasts_materialise(device=device)
        with CaptureQueriesContext(connection) as ctx:
            broadcasts_materialise(device=device)
            device_pending(device=device)
        return len(ctx.captured_queries)

    task_create(user=master, to=f"device:{device.pk}")
    small = queries()
    for i in range(40):
        done = task_create(user=master, to=f"device:[{device.pk},{other.pk}]", title=str(i))
        response_create(device=device, parent_id=done.msg_id, status="done")
        bc = task_create(user=master, to="device:*")
        broadcasts_materialise(device=device)
        response_create(device=device, parent_id=bc.msg_id, status="done")
    assert queries() == small
    assert len(device_pending(device=device)) == 1
    # Only this device's open rows are read: other devices' deliveries do not show up.
    assert Delivery.objects.filter(device=other, state="pending").count() == 40
