"""A task's own state never lies: a task completes once every delivery is final, a continuous one
stays open until cancelled or expired, and the periodic sweep times out what its expiry left open.
The clock of the sweep is injected (`now=`); `meta.expires_at` is checked like `expires_at`."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from pool.models import Delivery, Message
from pool.rollouts import rollouts_advance
from pool.services import device_set_tags, response_create, task_cancel, task_create, task_expire
from tests.pool.conftest import device_client


def states(task: Message) -> dict[str, int]:
    found: dict[str, int] = {}
    for state in Delivery.objects.filter(task=task).values_list("state", flat=True):
        found[state] = found.get(state, 0) + 1
    return found


def state_of(task: Message) -> str:
    return Message.objects.get(pk=task.pk).state


def test_a_list_task_completes_once_every_device_answered(make_device, master, client_for):
    a, b = make_device("a"), make_device("b")
    task = task_create(user=master, to=f"device:[{a.pk},{b.pk}]")
    response_create(device=a, parent_id=task.msg_id, status="done")
    assert state_of(task) == "in_progress"
    response_create(device=b, parent_id=task.msg_id, status="failed")
    detail = client_for(master).get(f"/pool/tasks/{task.msg_id}").json()
    assert detail["state"] == "completed" and detail["counts"]["done"] == 1 and detail["counts"]["failed"] == 1


def test_the_sweep_times_out_what_an_expiry_left_open_and_completes_the_task(make_device, master, client_for):
    a, b, c = make_device("a"), make_device("b"), make_device("c")
    expiry = timezone.now() + timedelta(minutes=10)
    task = task_create(user=master, to=f"device:[{a.pk},{b.pk},{c.pk}]", expires_at=expiry)
    response_create(device=a, parent_id=task.msg_id, status="done")
    response_create(device=b, parent_id=task.msg_id, status="progress", meta={"progress": 40})
    assert rollouts_advance(now=expiry - timedelta(seconds=1))["expired"] == 0
    assert state_of(task) == "in_progress"

    assert rollouts_advance(now=expiry + timedelta(seconds=30))["expired"] == 1
    detail = client_for(master).get(f"/pool/tasks/{task.msg_id}").json()
    assert detail["state"] == "completed"
    by_device = {row["device_id"]: row["state"] for row in detail["executions"]}
    assert by_device == {a.pk: "done", b.pk: "timed_out", c.pk: "timed_out"}  # the answer is kept
    late = device_client(b).post("/pool/response", {"parent_id": task.msg_id, "status": "done"})
    assert late.status_code == 409 and late.json()["code"] == "task_closed"
    # the decision is an info line of the day log, and a second sweep decides nothing
    info = Message.objects.get(type="info", parent_id=task.msg_id)
    assert info.title == "expired: 2 timed out, 0 never released" and info.meta["expiry"]["timed_out"] == 2
    assert rollouts_advance(now=expiry + timedelta(minutes=1))["expired"] == 0
    assert task_expire(task=task, now=expiry + timedelta(minutes=1)) is False


def test_a_cancelled_task_is_not_expired_afterwards(make_device, master):
    a = make_device("a")
    expiry = timezone.now() + timedelta(minutes=10)
    task = task_create(user=master, to=f"device:{a.pk}", expires_at=expiry)
    assert task_cancel(task=task)
    assert rollouts_advance(now=expiry + timedelta(minutes=1))["expired"] == 0
    assert state_of(task) == "cancelled" and states(task) == {"cancelled": 1}


def test_a_continuous_task_stays_open_until_cancelled(make_device, master):
    a, b = make_device("a"), make_device("b")
    device_set_tags(device=a, tags=["fw"])
    task = task_create(user=master, to="device:tag:fw", meta={"continuous": True})
    response_create(device=a, parent_id=task.msg_id, status="done")
    assert state_of(task) == "in_progress"  # b may still gain the tag
    device_set_tags(device=b, tags=["fw"])
    response_create(device=b, parent_id=task.msg_id, status="done")
    assert state_of(task) == "in_progress"
    assert task_cancel(task=task) and state_of(task) == "cancelled"


def test_a_continuous_task_ends_at_its_expiry(make_device, master):
    a, b = make_device("a"), make_device("b")
    device_set_tags(device=a, tags=["fw"])
    expiry = timezone.now() + timedelta(hours=1)
    task = task_create(user=master, to="device:tag:fw", meta={"continuous": True}, expires_at=expiry)
    response_create(device=a, parent_id=task.msg_id, status="done")
    rollouts_advance(now=expiry)
    assert state_of(task) == "completed" and states(task) == {"done": 1}
    device_set_tags(device=b, tags=["fw"])  # too late: the task is over
    assert states(task) == {"done": 1}


def test_a_task_that_reaches_nobody_is_completed_unless_continuous(master, db):
    plain = task_create(user=master, to="device:tag:nobody")
    assert plain.state == "completed" and state_of(plain) == "completed"
    waiting = task_create(user=master, to="device:tag:nobody", meta={"continuous": True})
    assert state_of(waiting) == "in_progress"


def test_meta_expires_at_is_the_expiry_and_ends_the_task(make_device, master, client_for):
    a = make_device("a")
    later = (timezone.now() + timedelta(hours=2)).replace(microsecond=0)
    answer = client_for(master).post(
        "/pool/task", {"to": f"device:{a.pk}", "meta": {"expires_at": later.isoformat()}}, format="json"
    )
    assert answer.status_code == 201
    assert answer.json()["meta"]["expires_at"] == later.strftime("%Y-%m-%dT%H:%M:%SZ")
    task = Message.objects.get(msg_id=answer.json()["id"])
    assert task.expires_at == later
    rollouts_advance(now=later)
    assert state_of(task) == "completed" and states(task) == {"timed_out": 1}


@pytest.mark.parametrize(
    "body, field",
    [
        ({"meta": {"expires_at": "next tuesday"}}, "meta.expires_at"),
        ({"meta": {"expires_at": 1765000000}}, "meta.expires_at"),
        ({"meta": {"expires_at": "2026-13-40T00:00:00Z"}}, "meta.expires_at"),
        ({"meta": {"expires_at": "2020-01-01T00:00:00Z"}}, "meta.expires_at"),
        ({"meta": {"expires_at": "2999-01-01T00:00:00Z"}, "expires_at": "2998-01-01T00:00:00Z"}, "meta.expires_at"),
    ],
)
def test_a_bad_meta_expires_at_is_400_naming_it(body, field, make_device, master, client_for):
    a = make_device("a")
    answer = client_for(master).post("/pool/task", {"to": f"device:{a.pk}", **body}, format="json")
    assert answer.status_code == 400, answer.json()
    assert answer.json()["code"] == "validation_error"
    assert field in answer.json()["extra"]["fields"] and field in answer.json()["message"]
    assert not Message.objects.filter(type="task").exists()
