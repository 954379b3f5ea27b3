from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from pool import services
from pool.models import Message
from pool.services import heartbeat_record, response_create, task_cancel, task_create, tasks_expire_due


@pytest.fixture
def events(monkeypatch):
    seen: list[dict] = []
    monkeypatch.setattr(services, "progress_publish", lambda **kw: seen.append(kw))
    return seen


def test_task_lifecycle_publishes_new_msg_end(events, make_device, master):
    d1, d2 = make_device("a"), make_device("b")
    task = task_create(user=master, to=f"device:[{d1.pk},{d2.pk}]", title="upgrade")
    topic = f"pooltask:{task.msg_id}"
    assert events[-1]["topic"] == topic and events[-1]["kind"] == "new" and events[-1]["text"] == "upgrade"
    assert events[-1]["state"]["devices"] == {str(d1.pk): "pending", str(d2.pk): "pending"}
    assert events[-1]["owner_id"] == master.pk

    response_create(device=d1, parent_id=task.msg_id, status="progress", meta={"progress": 30})
    assert events[-1]["kind"] == "msg" and events[-1]["state"]["device_state"] == "progress"
    assert events[-1]["state"]["progress"] == 30
    response_create(device=d1, parent_id=task.msg_id, status="done")
    assert [e["kind"] for e in events] == ["new", "msg", "msg"]
    response_create(device=d2, parent_id=task.msg_id, status="failed")
    assert [e["kind"] for e in events[-2:]] == ["msg", "end"]
    assert events[-1]["state"]["counts"]["done"] == 1 and events[-1]["state"]["counts"]["failed"] == 1


def test_a_broadcast_stays_open_after_every_device_answered_and_ends_at_its_expiry(events, make_device, master):
    d1, d2 = make_device("a"), make_device("b")
    make_device("c", validated=False)
    expiry = timezone.now() + timedelta(hours=1)
    task = task_create(user=master, to="device:*", expires_at=expiry)
    response_create(device=d1, parent_id=task.msg_id, status="done")
    response_create(device=d2, parent_id=task.msg_id, status="done")
    # a device validated later still receives it (the seed's rule), so it is not over
    assert events[-1]["kind"] == "msg"
    assert Message.objects.get(pk=task.pk).state == "in_progress"
    assert tasks_expire_due(now=expiry - timedelta(seconds=1)) == 0
    assert tasks_expire_due(now=expiry) == 1
    assert events[-1]["kind"] == "end" and events[-1]["state"]["task_state"] == "completed"
    assert Message.objects.get(pk=task.pk).state == "completed"


def test_cancel_ends_the_topic(events, device, master):
    task = task_create(user=master, to=f"device:{device.pk}")
    task_cancel(task=task)
    assert events[-1]["kind"] == "end" and events[-1]["state"]["cancelled"] is True


def test_heartbeat_publishes_online_state(events, device):
    heartbeat_record(device=device)
    assert events[-1]["topic"] == f"pooldevice:{device.pk}"
    assert events[-1]["kind"] == "msg" and events[-1]["state"]["online"] is True
    assert events[-1]["state"]["last_seen"]
