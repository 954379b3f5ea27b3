"""The operator's task API: GET /pool/tasks, GET /pool/tasks/<id>, cancel / pause / resume."""

from __future__ import annotations

from pool.models import Message
from pool.services import response_create, task_create
from tests.factories import UserFactory
from tests.pool.conftest import device_client


def test_a_user_gets_403_and_devices_and_anonymous_401(make_device, master, user, client_for, anon_client):
    d = make_device("a")
    task = task_create(user=master, to=f"device:{d.pk}")
    for path, method in [
        ("/pool/tasks", "get"),
        (f"/pool/tasks/{task.msg_id}", "get"),
        (f"/pool/tasks/{task.msg_id}/cancel", "post"),
        (f"/pool/tasks/{task.msg_id}/pause", "post"),
        (f"/pool/tasks/{task.msg_id}/resume", "post"),
    ]:
        assert getattr(client_for(user), method)(path).status_code == 403, path
        assert getattr(device_client(d), method)(path).status_code == 401, path
        assert getattr(anon_client, method)(path).status_code == 401, path
    assert Message.objects.get(pk=task.pk).state == "in_progress"


def test_a_master_sees_only_their_own_tasks_and_admins_all(make_device, master, admin, client_for):
    other = UserFactory(role="master")
    d = make_device("a")
    mine = task_create(user=master, to=f"device:{d.pk}", title="mine")
    theirs = task_create(user=other, to=f"device:{d.pk}", title="theirs")
    listed = client_for(master).get("/pool/tasks").json()
    assert [t["id"] for t in listed["results"]] == [mine.msg_id] and listed["count"] == 1
    assert {t["id"] for t in client_for(admin).get("/pool/tasks").json()["results"]} == {mine.msg_id, theirs.msg_id}
    # another master's task is not found, and cannot be cancelled
    assert client_for(master).get(f"/pool/tasks/{theirs.msg_id}").status_code == 404
    refused = client_for(master).post(f"/pool/tasks/{theirs.msg_id}/cancel")
    assert refused.status_code == 404 and refused.json()["code"] == "task_not_found"
    assert Message.objects.get(pk=theirs.pk).cancelled_at is None
    # a master filtering by another sender still sees only their own
    assert client_for(master).get(f"/pool/tasks?sender={other.email}").json()["results"] == []


def test_detail_has_executions_with_last_response_and_counts(make_device, master, client_for):
    a, b = make_device("a"), make_device("b")
    task = task_create(user=master, to=f"device:[{a.pk},{b.pk}]", title="upgrade")
    response_create(device=a, parent_id=task.msg_id, status="progress", meta={"progress": 40})
    response_create(device=a, parent_id=task.msg_id, status="done", title="ok")
    body = client_for(master).get(f"/pool/tasks/{task.msg_id}").json()
    assert body["state"] == "in_progress" and body["to"] == f"device:[{a.pk},{b.pk}]"
    assert body["counts"]["done"] == 1 and body["counts"]["pending"] == 1
    executions = {e["device_id"]: e for e in body["executions"]}
    assert executions[a.pk]["state"] == "done" and executions[a.pk]["progress"] == 40
    assert executions[a.pk]["last_response"]["status"] == "done" and executions[a.pk]["last_response"]["title"] == "ok"
    assert executions[b.pk]["state"] == "pending" and executions[b.pk]["last_response"] is None
    response_create(device=b, parent_id=task.msg_id, status="failed")
    assert client_for(master).get(f"/pool/tasks/{task.msg_id}").json()["state"] == "completed"
    assert client_for(master).get("/pool/tasks/msg_nope").status_code == 404


def test_filters_and_pagination(make_device, master, admin, client_for):
    d, e = make_device("a"), make_device("b")
    first = task_create(user=master, to=f"device:{d.pk}", title="1")
    second = task_create(user=master, to=f"device:{e.pk}", title="2")
    third = task_create(user=admin, to="device:*", title="3")
    client = client_for(admin)
    assert client.post(f"/pool/tasks/{first.msg_id}/cancel").json()["state"] == "cancelled"
    ids = lambda query: [t["id"] for t in client.get("/pool/tasks" + query).json()["results"]]  # noqa: E731
    assert ids("") == [third.msg_id, second.msg_id, first.msg_id]
    assert ids("?state=cancelled") == [first.msg_id]
    assert ids("?to=device:*") == [third.msg_id]
    assert ids(f"?device={e.pk}") == [second.msg_id]
    assert ids(f"?sender={admin.email}") == [third.msg_id]
    assert ids("?created_after=2999-01-01T00:00:00Z") == []
    assert ids("?created_before=2999-01-01T00:00:00Z&page_size=2") == [third.msg_id, second.msg_id]
    page2 = client.get("/pool/tasks?page_size=2&page=2").json()
    assert [t["id"] for t in page2["results"]] == [first.msg_id] and page2["count"] == 3
    for bad in ["?state=done", "?created_after=yesterday", "?device=0", "?sender=nobody", "?page=99"]:
        answer = client.get("/pool/tasks" + bad)
        assert answer.status_code in (400, 404), bad
        assert set(answer.json()) == {"code", "message", "extra"}, bad


def test_cancel_twice_is_409_and_pause_needs_a_rollout(make_device, master, client_for):
    d = make_device("a")
    task = task_create(user=master, to=f"device:{d.pk}")
    client = client_for(master)
    pause = client.post(f"/pool/tasks/{task.msg_id}/pause")
    assert pause.status_code == 409 and pause.json()["code"] == "not_a_rollout"
    assert client.post(f"/pool/tasks/{task.msg_id}/cancel").status_code == 200
    again = client.post(f"/pool/tasks/{task.msg_id}/cancel")
    assert again.status_code == 409 and again.json()["code"] == "task_not_open"
    assert device_client(d).get("/pool/pending").json() == []
