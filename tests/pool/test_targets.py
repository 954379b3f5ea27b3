"""Tags, static groups and the `to` forms that address them (device:tag:<slug>, device:group:<slug>)."""

from __future__ import annotations

import pytest

from pool.models import Delivery, DeviceGroup, Message
from pool.services import device_set_tags, group_set_devices, task_cancel, task_create
from tests.pool.conftest import device_client


def _targets(task: Message) -> set[int]:
    return set(Delivery.objects.filter(task=task).values_list("device_id", flat=True))


def test_a_tag_task_reaches_the_tagged_devices_at_send_time(make_device, master, client_for):
    a, b, c = make_device("a"), make_device("b"), make_device("c")
    device_set_tags(device=a, tags=["greenhouse", "fw-2"])
    device_set_tags(device=b, tags=["greenhouse"])
    answer = client_for(master).post("/pool/task", {"to": "device:tag:greenhouse", "title": "water"}, format="json")
    assert answer.status_code == 201
    assert answer.json()["to"] == "device:tag:greenhouse"  # stored and logged as sent, not expanded
    task = Message.objects.get(msg_id=answer.json()["id"])
    assert _targets(task) == {a.pk, b.pk}
    assert [m["id"] for m in device_client(a).get("/pool/pending").json()] == [task.msg_id]
    assert device_client(c).get("/pool/pending").json() == []
    # a device tagged later does not get a task that is not continuous
    device_set_tags(device=c, tags=["greenhouse"])
    assert device_client(c).get("/pool/pending").json() == []


def test_a_group_task_reaches_its_members_and_an_unknown_group_is_a_400(make_device, master, client_for):
    a, _outside = make_device("a"), make_device("b")
    group = DeviceGroup.objects.create(slug="north-field", name="North field")
    group_set_devices(group=group, devices=[a])
    client = client_for(master)
    task = client.post("/pool/task", {"to": "device:group:north-field"}, format="json").json()
    assert task["to"] == "device:group:north-field"
    assert _targets(Message.objects.get(msg_id=task["id"])) == {a.pk}
    unknown = client.post("/pool/task", {"to": "device:group:south"}, format="json")
    assert unknown.status_code == 400 and unknown.json()["code"] == "unknown_group"
    assert unknown.json()["extra"] == {"group": "south"}
    assert Message.objects.filter(type="task").count() == 1


@pytest.mark.parametrize(
    "to",
    [
        "device:tag:",
        "device:group:",
        "device:tag:Greenhouse",
        "device:tag:green house",
        "device:tag:green_house",
        "device:tag:" + "a" * 65,
        "device:group:a:b",
        "device:tags:x",
        "device:tag:x\x00",
    ],
)
def test_bad_tag_and_group_forms_are_400_invalid_target(to, master, client_for):
    answer = client_for(master).post("/pool/task", {"to": to}, format="json")
    assert answer.status_code == 400
    assert answer.json()["code"] in ("invalid_target", "validation_error")
    assert set(answer.json()) == {"code", "message", "extra"}
    assert not Message.objects.exists()


def test_continuous_tasks_reach_devices_that_gain_the_tag_or_join_the_group(make_device, master):
    a, b, c = make_device("a"), make_device("b"), make_device("c")
    device_set_tags(device=a, tags=["fw-2"])
    group = DeviceGroup.objects.create(slug="lab")
    continuous = task_create(user=master, to="device:tag:fw-2", meta={"continuous": True})
    once = task_create(user=master, to="device:tag:fw-2")
    by_group = task_create(user=master, to="device:group:lab", meta={"continuous": True})
    assert _targets(continuous) == {a.pk} and _targets(by_group) == set()

    device_set_tags(device=b, tags=["fw-2", "other"])
    group_set_devices(group=group, devices=[c])
    assert _targets(continuous) == {a.pk, b.pk}
    assert _targets(once) == {a.pk}
    assert _targets(by_group) == {c.pk}
    pending = {m["id"] for m in device_client(b).get("/pool/pending").json()}
    assert pending == {continuous.msg_id}

    # a closed task stops growing
    task_cancel(task=continuous)
    d = make_device("d")
    device_set_tags(device=d, tags=["fw-2"])
    assert _targets(continuous) == {a.pk, b.pk}


def test_continuous_must_be_a_boolean(master, client_for):
    answer = client_for(master).post("/pool/task", {"to": "device:tag:x", "meta": {"continuous": "yes"}}, format="json")
    assert answer.status_code == 400 and answer.json()["code"] == "validation_error"
    assert "meta.continuous" in answer.json()["extra"]["fields"]


def test_register_accepts_tags_and_refuses_bad_ones(anon_client, db):
    good = anon_client.post(
        "/pool/register", {"name": "probe", "kind": "sensor", "tags": ["greenhouse"]}, format="json"
    )
    assert good.status_code == 201
    from pool.models import Device

    assert list(Device.objects.get(pk=good.json()["device_id"]).tags.values_list("slug", flat=True)) == ["greenhouse"]
    bad = anon_client.post("/pool/register", {"name": "probe", "tags": ["Not OK"]}, format="json")
    assert bad.status_code == 400 and "tags" in bad.json()["extra"]["fields"]


def test_device_detail_and_patch_tags(make_device, master, admin, user, client_for, anon_client):
    a = make_device("a")
    group = DeviceGroup.objects.create(slug="lab")
    group_set_devices(group=group, devices=[a])
    task = task_create(user=master, to=f"device:{a.pk}", title="reboot")
    url = f"/pool/devices/{a.pk}"
    detail = client_for(master).get(url)
    assert detail.status_code == 200
    body = detail.json()
    assert body["groups"] == ["lab"] and body["tags"] == []
    assert body["online"] is False and body["last_heartbeat_at"] is None
    assert [(d["task_id"], d["state"]) for d in body["open_deliveries"]] == [(task.msg_id, "pending")]

    patched = client_for(admin).patch(url, {"tags": ["greenhouse", "fw-2", "fw-2"]}, format="json")
    assert patched.status_code == 200 and patched.json()["tags"] == ["fw-2", "greenhouse"]
    bad = client_for(admin).patch(url, {"tags": ["UPPER"]}, format="json")
    assert bad.status_code == 400 and "tags" in bad.json()["extra"]["fields"]
    assert client_for(admin).patch(url, {"tags": "fw-2"}, format="json").status_code == 400

    # who may: masters and admins; a user 403, a device token 401, anonymous 401; unknown device 404
    assert client_for(user).get(url).status_code == 403
    assert client_for(user).patch(url, {"tags": []}, format="json").status_code == 403
    assert device_client(a).patch(url, {"tags": []}, format="json").status_code == 401
    assert anon_client.get(url).status_code == 401
    assert client_for(admin).get("/pool/devices/999999").json()["code"] == "device_not_found"
    assert client_for(admin).get("/pool/devices/99999999999999999999").status_code == 404
    assert list(a.tags.values_list("slug", flat=True)) == ["fw-2", "greenhouse"]


def test_device_list_filters_by_tag_and_group(make_device, admin, client_for):
    a, b, c = make_device("a"), make_device("b"), make_device("c")
    device_set_tags(device=a, tags=["x"])
    device_set_tags(device=b, tags=["x", "y"])
    group_set_devices(group=DeviceGroup.objects.create(slug="g"), devices=[b, c])
    client = client_for(admin)
    assert [d["id"] for d in client.get("/pool/devices?tag=x").json()] == [a.pk, b.pk]
    assert [d["id"] for d in client.get("/pool/devices?group=g").json()] == [b.pk, c.pk]
    assert [d["id"] for d in client.get("/pool/devices?tag=x&group=g").json()] == [b.pk]
    assert client.get("/pool/devices?tag=nobody").json() == []
    bad = client.get("/pool/devices?tag=%00")
    assert bad.status_code == 400 and bad.json()["code"] == "validation_error"


@pytest.mark.django_db(transaction=True)
def test_a_masters_change_of_a_devices_tags_is_audited_and_an_enrolment_is_not(master, client_for, anon_client) -> None:
    """Tags decide which devices other masters' tag tasks reach: a change names who made it and the
    tags before and after. Anyone may enrol with tags, so an enrolment writes no entry."""
    from coordinator.models import AuditEntry

    enrolled = anon_client.post("/pool/register", {"name": "probe", "tags": ["lab"]}, format="json")
    assert enrolled.status_code == 201 and not AuditEntry.objects.exists()
    url = f"/pool/devices/{enrolled.json()['device_id']}"
    assert client_for(master).patch(url, {"tags": ["prod", "lab"]}, format="json").status_code == 200
    assert client_for(master).patch(url, {"tags": ["lab", "prod"]}, format="json").status_code == 200  # no change
    [entry] = AuditEntry.objects.all()
    assert (entry.action, entry.actor_id, entry.target_id) == (
        "device.set_tags",
        master.pk,
        str(enrolled.json()["device_id"]),
    )
    assert (entry.before, entry.after) == ({"tags": ["lab"]}, {"tags": ["lab", "prod"]})
