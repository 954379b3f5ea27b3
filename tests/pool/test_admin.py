from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from jobs.models import Job
from jobs.services import job_execute
from pool.models import Delivery, Device, Message
from pool.services import heartbeat_record, response_create, task_create


@pytest.fixture
def staff(admin) -> Client:
    client = Client()
    client.force_login(admin)
    return client


def test_device_list_shows_badge_pending_and_live_topic(staff, make_device, master):
    online, offline = make_device("online-one"), make_device("quiet-one")
    heartbeat_record(device=online)
    task_create(user=master, to="device:*")
    page = staff.get(reverse("admin:pool_device_changelist")).content.decode()
    assert f'data-progress-topic="pooldevice:{online.pk}"' in page
    assert "progress/live.js" in page
    badges = dict(re.findall(r'pooldevice:(\d+)" [^>]*><span data-progress-field="badge"[^>]*>(\w+)', page))
    assert badges == {str(online.pk): "online", str(offline.pk): "offline"}
    # the page turns a badge offline by itself when its moment passes; one never seen is past already
    assert re.search(
        rf'pooldevice:{offline.pk}" data-live-until="0" data-live-until-field="online_until" data-live-expired>', page
    )
    assert '<td class="field-pending">1</td>' in page


def test_device_add_shows_secret_once_and_actions_work(staff, make_device):
    response = staff.post(
        reverse("admin:pool_device_add"), {"name": "bench-pc", "kind": "pc", "validated": "on"}, follow=True
    )
    device = Device.objects.get(name="bench-pc")
    assert device.validated
    text = response.content.decode()
    secret = re.search(r"(?:shown only now|shown only now): (\S+?)<", text).group(1)
    assert (
        Client()
        .post("/pool/token", {"device_id": device.pk, "secret": secret}, content_type="application/json")
        .status_code
        == 200
    )

    other = make_device("new", validated=False)
    url = reverse("admin:pool_device_changelist")
    staff.post(url, {"action": "validate", "_selected_action": [other.pk]})
    other.refresh_from_db()
    assert other.validated
    staff.post(url, {"action": "disable", "_selected_action": [other.pk]})
    other.refresh_from_db()
    assert not other.enabled
    old_hash = device.secret_hash
    response = staff.post(url, {"action": "issue_secret", "_selected_action": [device.pk]}, follow=True)
    device.refresh_from_db()
    assert device.secret_hash != old_hash
    new_secret = re.search(r"(?:shown only now|shown only now): (\S+?)<", response.content.decode()).group(1)
    assert (
        Client()
        .post("/pool/token", {"device_id": device.pk, "secret": secret}, content_type="application/json")
        .status_code
        == 401
    )
    assert (
        Client()
        .post("/pool/token", {"device_id": device.pk, "secret": new_secret}, content_type="application/json")
        .status_code
        == 200
    )


def test_compose_task_with_target_picker(staff, make_device, admin):
    d1, d2 = make_device("a"), make_device("b")
    url = reverse("admin:pool_task_add")
    assert staff.get(url).status_code == 200
    staff.post(url, {"target": "one", "devices": [d1.pk], "title": "one", "body": "", "meta_json": ""})
    staff.post(
        url,
        {
            "target": "several",
            "devices": [d1.pk, d2.pk],
            "title": "two",
            "body": "",
            "meta_json": '{"k": 1}',
            "expires_at_0": "2999-01-01",
            "expires_at_1": "00:00:00",
        },
    )
    unconfirmed = staff.post(url, {"target": "all", "title": "all", "body": "", "meta_json": ""})
    assert "This goes to all 2 devices: tick the box to confirm." in unconfirmed.content.decode()
    staff.post(url, {"target": "all", "confirm_all": "on", "title": "all", "body": "", "meta_json": ""})
    tasks = {t.title: t for t in Message.objects.filter(type="task")}
    assert tasks["one"].to == f"device:{d1.pk}"
    assert tasks["two"].to == f"device:[{d1.pk},{d2.pk}]" and tasks["two"].meta["k"] == 1
    assert tasks["two"].expires_at.year == 2999
    assert tasks["all"].to == "device:*"
    assert tasks["one"].sender == f"user:{admin.email}"

    bad = staff.post(url, {"target": "one", "devices": [d1.pk, d2.pk], "title": "x", "meta_json": "[1]"})
    assert bad.status_code == 200 and "Pick exactly one device." in bad.content.decode()
    assert "Meta must be a JSON object." in bad.content.decode()
    assert Message.objects.filter(type="task").count() == 3


def test_task_page_threads_responses_live_and_cancel(staff, make_device, master):
    d1, d2 = make_device("alpha"), make_device("beta")
    task = task_create(user=master, to=f"device:[{d1.pk},{d2.pk}]", title="update firmware")
    response_create(device=d1, parent_id=task.msg_id, status="progress", body="half way")
    response_create(device=d1, parent_id=task.msg_id, status="done", body="all good")
    page = staff.get(reverse("admin:pool_task_change", args=[task.pk])).content.decode()
    assert f'data-progress-topic="pooltask:{task.msg_id}" data-progress-reload-fragment' in page
    assert 'id="pool-task-deliveries"' in page and "progress/live.js" in page
    assert page.index("half way") < page.index("all good") < page.index("beta")
    assert 'class="pool-state-done">done<' in page and 'class="pool-state-pending">pending<' in page

    listing = staff.get(reverse("admin:pool_task_changelist")).content.decode()
    assert "1 done, 1 pending" in listing or "1 pending, 1 done" in listing

    answer = staff.post(
        reverse("admin:pool_task_changelist"), {"action": "cancel", "_selected_action": [task.pk]}, follow=True
    )
    assert "being cancelled in the background" in answer.content.decode()
    task.refresh_from_db()
    assert task.cancelled_at is None  # the page answered before the work was done ...
    job_execute(job_id=Job.objects.get(type="admin.pool_tasks_cancel").pk)
    task.refresh_from_db()
    assert task.cancelled_at is not None  # ... and the job did it
    assert Delivery.objects.get(task=task, device=d2).state == "cancelled"


def test_task_list_filters_and_search(staff, make_device, master):
    d1, d2 = make_device("a"), make_device("b")
    direct = task_create(user=master, to=f"device:{d1.pk}", title="reboot router")
    task_create(user=master, to="device:*", title="inventory")
    listed = task_create(user=master, to=f"device:[{d1.pk},{d2.pk}]", title="collect logs", body="zip them")
    response_create(device=d2, parent_id=listed.msg_id, status="failed")
    url = reverse("admin:pool_task_changelist")

    def titles(query: str) -> set[str]:
        page = staff.get(url + query)
        assert page.status_code == 200
        return {t.title for t in page.context["cl"].result_list}

    assert titles("") == {"reboot router", "inventory", "collect logs"}
    assert titles("?target=all") == {"inventory"}
    assert titles("?target=list") == {"collect logs"}
    assert titles("?target=one") == {"reboot router"}
    assert titles(f"?device={d2.pk}") == {"collect logs"}
    assert titles("?status=failed") == {"collect logs"}
    page = staff.get(url + "?status=open").content.decode()
    assert "1 pending, 1 failed" in page  # counts are not multiplied by the filter
    assert titles("?status=open") == {"reboot router", "collect logs"}
    assert titles("?q=zip") == {"collect logs"}
    day = timezone.now()
    assert titles(f"?ts__year={day.year}&ts__month={day.month}&ts__day={day.day}") == {
        "reboot router",
        "inventory",
        "collect logs",
    }
    assert direct.title in titles("?q=reboot")


def test_message_log_is_read_only_and_filterable(staff, device, master):
    task_create(user=master, to=f"device:{device.pk}", title="t")
    heartbeat_record(device=device)
    url = reverse("admin:pool_message_changelist")
    assert staff.get(url).status_code == 200
    page = staff.get(url + "?type__exact=heartbeat")
    assert [m.type for m in page.context["cl"].result_list] == ["heartbeat"]
    assert staff.get(reverse("admin:pool_message_add")).status_code == 403
    message = Message.objects.first()
    detail = staff.get(reverse("admin:pool_message_change", args=[message.pk]))
    assert detail.status_code == 200 and message.msg_id in detail.content.decode()
    staff.post(reverse("admin:pool_message_change", args=[message.pk]), {"title": "changed"})
    message.refresh_from_db()
    assert message.title == "t"


def test_admin_dashboard_cards(rf, admin, make_device):
    from django.apps import apps

    make_device("waiting", validated=False)
    request = rf.get("/admin/")
    request.user = admin
    cards = {c["title"]: c for c in apps.get_app_config("pool").admin_dashboard(request)}
    assert cards["Devices to validate"]["value"] == 1
    assert Client().get(cards["Devices to validate"]["url"]).status_code == 302  # a real admin URL (login first)


def test_device_pages_render_and_edit_name(staff, device):
    assert staff.get(reverse("admin:pool_device_add")).status_code == 200
    url = reverse("admin:pool_device_change", args=[device.pk])
    page = staff.get(url)
    assert page.status_code == 200 and "broadcasts_seen_until" not in page.content.decode().split("<form")[0]
    staff.post(url, {"name": "renamed", "kind": "sensor"})
    device.refresh_from_db()
    assert device.name == "renamed" and device.validated  # flags change only through actions


def test_the_composer_searches_counts_and_confirms_a_whole_fleet_send(staff, make_device):
    online, quiet, off = make_device("lab-pc"), make_device("cellar-sensor"), make_device("gone")
    Device.objects.filter(pk=quiet.pk).update(kind="sensor")
    Device.objects.filter(pk=off.pk).update(enabled=False)
    heartbeat_record(device=online)
    page = staff.get(reverse("admin:pool_task_add")).content.decode()
    assert "pool/composer.js" in page and "data-device-picker" in page
    options = dict(re.findall(r'<option value="(\d+)"[^>]*>([^<]+)</option>', page))
    assert options[str(online.pk)].endswith("● online") and "○ offline" in options[str(quiet.pk)]
    assert re.search(rf'<option value="{quiet.pk}" data-kind="sensor" data-online="0"', page)
    assert "disabled" in options[str(off.pk)]
    # "All devices" asks for a confirmation that names how many devices get it (enabled ones)
    assert "Yes, send it to all 2 devices" in page
    # the expiry is a date and a time picker, the title one line
    assert 'name="expires_at_0"' in page and 'class="vDateField' in page and 'class="vTimeField' in page
    assert re.search(r'<input type="text" name="title"', page) and '<textarea name="title"' not in page


def test_a_task_page_opens_with_counts_by_state_and_a_bar(staff, make_device, master):
    devices = [make_device(f"d{i}") for i in range(4)]
    task = task_create(user=master, to="device:[" + ",".join(str(d.pk) for d in devices) + "]", title="t")
    response_create(device=devices[0], parent_id=task.msg_id, status="done")
    response_create(device=devices[1], parent_id=task.msg_id, status="failed")
    page = staff.get(reverse("admin:pool_task_change", args=[task.pk])).content.decode()
    counts = page.index('class="pool-state-counts"')
    assert counts < page.index("field-msg_id")  # before the task's own fields
    assert '<span class="pool-state-pending">2 pending</span>' in page
    assert (
        '<span class="pool-state-done">1 done</span>' in page
        and '<span class="pool-state-failed">1 failed</span>' in page
    )
    assert (
        'class="pool-bar-done" style="width: 25.00%"' in page
        and 'class="pool-bar-pending" style="width: 50.00%"' in page
    )


def test_searching_messages_by_an_id_finds_it_and_its_answers(staff, make_device, master):
    device = make_device("d")
    task = task_create(user=master, to=f"device:{device.pk}", title="reboot")
    answer = response_create(device=device, parent_id=task.msg_id, status="done", body="rebooted")
    task_create(user=master, to=f"device:{device.pk}", title=f"mentions {task.msg_id} in its title")
    page = staff.get(reverse("admin:pool_message_changelist"), {"q": task.msg_id}).content.decode()
    found = set(re.findall(r'href="/admin/pool/message/(\d+)/change/', page))
    assert found == {str(task.pk), str(answer.pk)}  # the id's own rows, through the unique index
    words = staff.get(reverse("admin:pool_message_changelist"), {"q": "mentions"}).content.decode()
    assert "in its title" in words  # free text still searches titles and bodies


def test_the_composer_refuses_what_the_database_cannot_store(staff, make_device):
    device = make_device("d")
    url = reverse("admin:pool_task_add")
    huge_id = staff.post(url, {"target": "several", "devices": ["9" * 30], "title": "t", "body": "", "meta_json": ""})
    assert huge_id.status_code == 200 and 'class="errorlist' in huge_id.content.decode()
    nul = staff.post(
        url, {"target": "one", "devices": [device.pk], "title": "t", "body": "", "meta_json": '{"a": "\\u0000"}'}
    )
    assert nul.status_code == 200 and "NUL" in nul.content.decode()
    many = [make_device(f"n{i}").pk for i in range(5)]
    Message._meta.get_field("to").max_length, limit = 12, Message._meta.get_field("to").max_length
    try:
        too_long = staff.post(url, {"target": "several", "devices": many, "title": "t", "body": "", "meta_json": ""})
    finally:
        Message._meta.get_field("to").max_length = limit
    assert "5 devices are too many for one list" in too_long.content.decode()
    assert not Message.objects.filter(type="task").exists()


@pytest.mark.parametrize(
    "meta",
    [
        '{"rollout": {"per_minute": 1e308}}',
        '{"rollout": {"per_minute": 0}}',
        '{"rollout": "fast"}',
        '{"continuous": "yes"}',
    ],
)
def test_a_rollout_or_flag_written_in_the_meta_json_is_refused_with_a_message_not_a_500(staff, make_device, meta):
    device = make_device("d")
    url = reverse("admin:pool_task_add")
    form = {"target": "one", "devices": [device.pk], "title": "t", "body": "", "meta_json": meta}
    refused = staff.post(url, form, follow=True)
    assert refused.status_code == 200
    assert "The task was not sent" in refused.content.decode()
    assert not Message.objects.filter(type="task").exists()


@pytest.mark.parametrize("value", ["off", "0", "no", "false", ""])
def test_a_scripted_post_that_does_not_tick_the_fleet_box_sends_to_nobody(staff, make_device, value):
    make_device("a"), make_device("b")
    refused = staff.post(
        reverse("admin:pool_task_add"),
        {"target": "all", "confirm_all": value, "title": "all", "body": "", "meta_json": ""},
    )
    assert "This goes to all 2 devices: tick the box to confirm." in refused.content.decode()
    assert not Message.objects.filter(type="task").exists()


def test_devices_show_tags_and_groups_and_filter_by_them(staff, make_device, master):
    from pool.models import DeviceGroup
    from pool.services import device_set_tags, group_set_devices

    a, b = make_device("tagged-one"), make_device("plain-one")
    device_set_tags(device=a, tags=["greenhouse"])
    group_set_devices(group=DeviceGroup.objects.create(slug="lab"), devices=[b])
    task = task_create(user=master, to=f"device:{a.pk}", title="water the plants")
    url = reverse("admin:pool_device_changelist")
    page = staff.get(url).content.decode()
    assert '<td class="field-tag_list">greenhouse</td>' in page and '<td class="field-group_list">lab</td>' in page
    by_tag = staff.get(url + "?tag=greenhouse").content.decode()
    assert "tagged-one" in by_tag and "plain-one" not in by_tag
    by_group = staff.get(url + "?group=lab").content.decode()
    assert "plain-one" in by_group and "tagged-one" not in by_group
    assert staff.get(url + "?tag=%00").status_code == 400  # the site refuses NUL before the database
    assert staff.get(url + "?tag=Not-A-Slug").status_code == 200

    change = staff.get(reverse("admin:pool_device_change", args=[a.pk])).content.decode()
    assert "water the plants" in change and 'value="greenhouse"' in change
    staff.post(
        reverse("admin:pool_device_change", args=[a.pk]),
        {"name": "tagged-one", "kind": "x", "tags_text": "fw-2, greenhouse"},
    )
    assert sorted(a.tags.values_list("slug", flat=True)) == ["fw-2", "greenhouse"]
    refused = staff.post(
        reverse("admin:pool_device_change", args=[a.pk]), {"name": "x", "kind": "", "tags_text": "Bad_Tag"}
    )
    assert "Not a tag: Bad_Tag" in refused.content.decode()
    assert task.to == f"device:{a.pk}"


def test_group_admin_membership_reaches_continuous_tasks_and_composer_takes_tags(staff, make_device, admin):
    from pool.models import DeviceGroup

    a, b = make_device("a"), make_device("b")
    add = staff.post(reverse("admin:pool_devicegroup_add"), {"slug": "north", "name": "North", "devices": [a.pk]})
    assert add.status_code == 302
    group = DeviceGroup.objects.get(slug="north")
    assert staff.post(reverse("admin:pool_devicegroup_add"), {"slug": "Bad Slug", "name": ""}).status_code == 200
    compose = reverse("admin:pool_task_add")
    staff.post(compose, {"target": "group", "group": "north", "continuous": "on", "title": "g", "meta_json": ""})
    task = Message.objects.get(type="task", title="g")
    assert task.to == "device:group:north" and task.meta == {"continuous": True}
    staff.post(
        reverse("admin:pool_devicegroup_change", args=[group.pk]),
        {"slug": "north", "name": "North", "devices": [a.pk, b.pk]},
    )
    assert set(Delivery.objects.filter(task=task).values_list("device_id", flat=True)) == {a.pk, b.pk}

    from pool.services import device_set_tags

    device_set_tags(device=b, tags=["fw-2"])
    page = staff.get(compose).content.decode()
    assert "fw-2 (1)" in page and "north (2 devices)" in page
    staff.post(compose, {"target": "tag", "tag": "fw-2", "title": "t", "meta_json": ""})
    assert Message.objects.get(type="task", title="t").to == "device:tag:fw-2"
    missing = staff.post(compose, {"target": "tag", "tag": "", "title": "t2", "meta_json": ""})
    assert "Name a tag." in missing.content.decode()


def test_rollout_page_shows_progress_abort_reason_and_actions_pause_resume(staff, make_device, master):
    from pool.rollouts import rollout_step

    devices = [make_device(f"d{i}") for i in range(6)]
    ids = ",".join(str(d.pk) for d in devices)
    policy = {"per_minute": 4, "abort": {"failed_percent": 50, "min_finished": 2}}
    task = task_create(user=master, to=f"device:[{ids}]", title="fw", meta={"rollout": policy})
    rollout_step(task_id=task.pk)
    page = staff.get(reverse("admin:pool_task_change", args=[task.pk])).content.decode()
    assert "Staged rollout: 4 a minute" in page and 'class="pool-released">4<' in page
    assert 'class="pool-bar-pending"' in page and 'class="pool-bar-queued"' in page
    assert "4 pending" in page and "2 queued" in page

    url = reverse("admin:pool_task_changelist")
    staff.post(url, {"action": "pause", "_selected_action": [task.pk]})
    task.refresh_from_db()
    assert task.paused_at is not None
    staff.post(url, {"action": "resume", "_selected_action": [task.pk]})
    task.refresh_from_db()
    assert task.paused_at is None

    for d in devices[:2]:
        response_create(device=d, parent_id=task.msg_id, status="failed")
    rollout_step(task_id=task.pk)
    page = staff.get(reverse("admin:pool_task_change", args=[task.pk])).content.decode()
    assert "Aborted: 2 of 2 finished deliveries failed" in page and "aborted" in page


def test_composer_builds_a_rollout_and_refuses_a_bad_one(staff, make_device):
    a, b = make_device("a"), make_device("b")
    url = reverse("admin:pool_task_add")
    base = {"target": "several", "devices": [a.pk, b.pk], "title": "fw", "meta_json": ""}
    staff.post(
        url,
        {
            **base,
            "rollout_per_minute": "10",
            "abort_percent": "20",
            "abort_min": "5",
            "retries_max": "2",
            "retries_on": ["failed"],
            "window_start_0": "2026-12-10",
            "window_start_1": "02:00:00",
        },
    )
    task = Message.objects.get(type="task", title="fw")
    assert task.state == "scheduled"
    assert task.meta["rollout"]["per_minute"] == 10
    assert task.meta["rollout"]["abort"] == {"failed_percent": 20.0, "min_finished": 5}
    assert task.meta["rollout"]["retries"] == {"max": 2, "on": ["failed"]}
    assert task.meta["rollout"]["window"]["start"].startswith("2026-12-10T")
    bad = staff.post(url, {**base, "title": "bad", "rollout_per_minute": "10", "abort_percent": "150"})
    assert "meta.rollout.abort.failed_percent" in bad.content.decode()
    assert not Message.objects.filter(title="bad").exists()


@pytest.mark.parametrize("bad", ["abc", "\x00", "9" * 30, "9" * 5000, "1e999", "-1", "١"])
def test_a_group_posted_with_a_device_value_that_is_no_id_is_a_form_error_not_a_500(staff, make_device, bad):
    from pool.models import DeviceGroup

    device = make_device("a")
    page = staff.post(
        reverse("admin:pool_devicegroup_add"), {"slug": "north", "name": "N", "devices": [device.pk, bad]}
    )
    assert page.status_code == 200 and 'class="errorlist' in page.content.decode()
    assert not DeviceGroup.objects.exists()


def test_the_composer_checks_an_expiry_in_meta_and_sends_a_staged_broadcast(staff, make_device):
    make_device("a"), make_device("b")
    url = reverse("admin:pool_task_add")
    base = {"target": "all", "confirm_all": "on", "title": "fw", "body": ""}
    bad = staff.post(url, {**base, "meta_json": '{"expires_at": "soon"}'})
    assert bad.status_code == 200 and "meta.expires_at" in bad.content.decode()
    past = staff.post(url, {**base, "meta_json": '{"expires_at": "2020-01-01T00:00:00Z"}'})
    assert "must be in the future" in past.content.decode()
    assert not Message.objects.filter(type="task").exists()
    staff.post(url, {**base, "meta_json": "", "rollout_per_minute": "1"})
    task = Message.objects.get(type="task", title="fw")
    assert task.to == "device:*" and task.state == "scheduled"
    assert list(Delivery.objects.filter(task=task).values_list("state", flat=True)) == ["queued", "queued"]


def test_the_composer_count_view_counts_what_a_target_reaches_for_staff_who_may_compose(staff, make_device):
    from django.contrib.auth.models import Permission

    from pool.models import DeviceGroup
    from pool.services import device_set_tags, group_set_devices
    from tests.factories import UserFactory

    a, b, c = make_device("a"), make_device("b"), make_device("c")
    make_device("unvalidated", validated=False)
    device_set_tags(device=a, tags=["fw"]), device_set_tags(device=b, tags=["fw"])
    group_set_devices(group=DeviceGroup.objects.create(slug="north"), devices=[c])
    url = reverse("admin:pool_task_target_count")

    def count(to: str) -> tuple[int, dict]:
        answer = staff.get(url, {"to": to})
        return answer.status_code, answer.json()

    assert count("device:tag:fw") == (200, {"to": "device:tag:fw", "count": 2})
    assert count("device:tag:nobody") == (200, {"to": "device:tag:nobody", "count": 0})
    assert count("device:group:north") == (200, {"to": "device:group:north", "count": 1})
    assert count(f"device:[{a.pk},{c.pk},999999]") == (200, {"to": f"device:[{a.pk},{c.pk},999999]", "count": 2})
    assert count("device:*") == (200, {"to": "device:*", "count": 3})  # validated, enabled devices
    status, body = count("device:tag:Bad Tag")
    assert status == 400 and body["code"] == "invalid_target"
    status, body = count("device:group:south")
    assert status == 400 and body["code"] == "unknown_group"
    assert count("user:boss@example.com")[0] == 400

    looker = UserFactory(role="user", is_staff=True)
    looker.user_permissions.set(Permission.objects.filter(codename="view_task"))
    viewer = Client()
    viewer.force_login(looker)
    assert viewer.get(url, {"to": "device:tag:fw"}).status_code == 403
    assert Client().get(url, {"to": "device:tag:fw"}).status_code == 302  # to the login page
