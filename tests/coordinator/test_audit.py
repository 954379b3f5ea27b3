"""The audit trail: every operator action writes exactly one entry, and nobody changes one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.db import DatabaseError, connection, transaction
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from coordinator.models import AuditEntry, AuditEntryImmutableError, Role, User
from coordinator.selectors import audit_export_rows
from coordinator.services import audit_record, audit_scope
from farm.models import Run
from jobs.models import Job
from jobs.services import job_retry
from pool.models import Device
from tests.factories import DeviceFactory, JobFactory, RunFactory, UserFactory

# Entries are written once the action's writes commit: these tests commit for real.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def staff(admin: User) -> Client:
    client = Client(REMOTE_ADDR="203.0.113.7")
    client.force_login(admin)
    return client


def only_entry() -> AuditEntry:
    entries = list(AuditEntry.objects.all())
    assert len(entries) == 1, [(e.action, e.target_label) for e in entries]
    return entries[0]


def test_role_change_in_the_admin_writes_one_entry_with_who_where_and_values(staff: Client, admin: User) -> None:
    target = UserFactory(role=Role.USER)
    staff.post(reverse("admin:coordinator_user_changelist"), {"action": "make_master", "_selected_action": [target.pk]})
    entry = only_entry()
    assert (entry.actor_id, entry.actor_label, entry.address) == (admin.pk, admin.email, "203.0.113.7")
    assert entry.action == "admin.action.make_master"
    [change] = entry.details
    assert change["action"] == "user.role_set"
    assert change["target_id"] == str(target.pk)
    assert (change["before"]["role"], change["after"]["role"]) == ("user", "master")


def test_the_address_is_the_client_the_front_door_names_not_one_the_client_wrote(admin: User) -> None:
    """Behind the front door granian sees no peer (a UNIX socket): the door appends the client's
    address to X-Forwarded-For, after anything the client wrote there itself."""
    staff = Client(REMOTE_ADDR="", HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.9")
    staff.force_login(admin)
    target = UserFactory(role=Role.USER)
    staff.post(reverse("admin:coordinator_user_changelist"), {"action": "make_master", "_selected_action": [target.pk]})
    assert only_entry().address == "203.0.113.9"


def test_staff_flag_change_on_the_edit_page_keeps_before_and_after(staff: Client) -> None:
    target = UserFactory(role=Role.USER)
    url = reverse("admin:coordinator_user_change", args=[target.pk])
    form = {"email": target.email, "name": target.name, "role": "user", "is_active": "on", "is_staff": "on"}
    form |= {"date_joined_0": "2026-01-01", "date_joined_1": "00:00:00"}
    response = staff.post(url, form)
    assert response.status_code == 302
    entry = only_entry()
    assert (entry.action, entry.target_type, entry.target_id) == ("admin.change", "coordinator.user", str(target.pk))
    assert (entry.before, entry.after) == ({"is_staff": False}, {"is_staff": True})


def test_role_change_on_the_edit_page_is_one_entry(staff: Client) -> None:
    target = UserFactory(role=Role.USER)
    url = reverse("admin:coordinator_user_change", args=[target.pk])
    form = {"email": target.email, "name": target.name, "role": "master", "is_active": "on"}
    form |= {"date_joined_0": "2026-01-01", "date_joined_1": "00:00:00"}
    assert staff.post(url, form).status_code == 302
    entry = only_entry()
    actions = [entry.action, *(d["action"] for d in entry.details)]
    assert sorted(actions) == ["admin.change", "user.role_set"]


@pytest.mark.parametrize(
    ("action", "recorded", "after"),
    [
        ("validate", "device.set_flags", {"validated": True}),
        ("disable", "device.set_flags", {"enabled": False}),
        ("issue_secret", "device.issue_secret", {}),
    ],
)
def test_device_actions_write_one_entry_each(staff: Client, action: str, recorded: str, after: dict[str, Any]) -> None:
    device = DeviceFactory(validated=False)
    url = reverse("admin:pool_device_changelist")
    staff.post(url, {"action": action, "_selected_action": [device.pk]})
    entry = only_entry()
    assert entry.action == f"admin.action.{action}"
    [change] = entry.details
    assert change["action"] == recorded
    assert after.items() <= change["after"].items()
    assert "secret" not in str(entry.details).replace("issue_secret", "")  # the secret itself is never kept


def test_admin_delete_is_one_entry_after_its_confirmation(staff: Client) -> None:
    runs = [RunFactory(), RunFactory()]
    url = reverse("admin:farm_run_changelist")
    form = {"action": "delete_selected", "_selected_action": [r.pk for r in runs]}
    staff.post(url, form)  # the confirmation page: nothing happened yet
    assert not AuditEntry.objects.exists()
    staff.post(url, {**form, "post": "yes"})
    entry = only_entry()
    assert entry.action == "admin.action.delete_selected"
    deleted = {(d["action"], d["target_id"]) for d in entry.details}
    assert {("admin.delete", str(r.pk)) for r in runs} <= deleted
    assert not Run.objects.exists()


def test_an_action_that_is_not_offered_writes_nothing(staff: Client) -> None:
    device = DeviceFactory()
    staff.post(reverse("admin:pool_device_changelist"), {"action": "delete_selected", "_selected_action": [device.pk]})
    assert not AuditEntry.objects.exists()
    assert Device.objects.filter(pk=device.pk).exists()


def test_api_retry_writes_one_entry(user: User, client_for: Callable[[User], APIClient]) -> None:
    job = JobFactory(created_by=user, status=Job.Status.FAILURE, type="noop")
    response = client_for(user).post(f"/v1/tasks/{job.pk}/retry", REMOTE_ADDR="198.51.100.2")
    assert response.status_code == 200
    entry = only_entry()
    assert (entry.action, entry.target_id, entry.actor_id) == ("job.retry", str(job.pk), user.pk)
    assert (entry.before, entry.after) == ({"status": "failure"}, {"status": "fresh"})


def test_a_refused_retry_writes_nothing(user: User, client_for: Callable[[User], APIClient]) -> None:
    job = JobFactory(created_by=user, status=Job.Status.SUCCESS, type="noop")
    assert client_for(user).post(f"/v1/tasks/{job.pk}/retry").status_code == 409
    assert not AuditEntry.objects.exists()


def test_farm_restart_and_delete_over_the_api_write_one_entry_each(
    user: User, client_for: Callable[[User], APIClient]
) -> None:
    run = RunFactory(owner=user)
    api = client_for(user)
    assert api.post(f"/api/runs/{run.uuid}/restart?all=True").status_code == 204
    assert only_entry().action == "run.restart"
    assert api.delete(f"/api/runs/{run.uuid}").status_code == 204
    assert [e.action for e in AuditEntry.objects.order_by("id")] == ["run.restart", "run.delete"]
    assert not Run.objects.exists()


def test_work_outside_an_operator_action_is_not_recorded(db: None) -> None:
    # A worker retrying a job for a bulk action: the admin action that asked for it was recorded.
    job_retry(job=JobFactory(status=Job.Status.FAILURE, type="noop"))
    assert not AuditEntry.objects.exists()


def test_a_rolled_back_change_is_not_recorded(admin: User) -> None:
    with audit_scope(actor=admin):
        with pytest.raises(RuntimeError), transaction.atomic():
            audit_record(action="test.never", target="nothing")
            raise RuntimeError
    assert not AuditEntry.objects.exists()


def test_nobody_can_change_or_delete_an_entry(staff: Client, admin: User) -> None:
    audit_record(action="test.kept", target="something", actor=admin)
    entry = only_entry()
    # the admin, even for an admin: read, filter and search, but no change, no delete, no add
    change_url = reverse("admin:coordinator_auditentry_change", args=[entry.pk])
    assert staff.get(reverse("admin:coordinator_auditentry_changelist") + "?action=test.kept").status_code == 200
    assert staff.get(change_url).status_code == 200  # the read-only view
    staff.post(change_url, {"action": "forged", "target_label": "forged"})
    assert (
        staff.post(reverse("admin:coordinator_auditentry_delete", args=[entry.pk]), {"post": "yes"}).status_code == 403
    )
    assert staff.get(reverse("admin:coordinator_auditentry_add")).status_code == 403
    listing = reverse("admin:coordinator_auditentry_changelist")
    staff.post(listing, {"action": "delete_selected", "_selected_action": [entry.pk], "post": "yes"})
    assert only_entry().action == "test.kept"
    # and the model and its querysets refuse it too
    entry.action = "forged"
    with pytest.raises(AuditEntryImmutableError):
        entry.save()
    with pytest.raises(AuditEntryImmutableError):
        entry.delete()
    with pytest.raises(AuditEntryImmutableError):
        AuditEntry.objects.filter(pk=entry.pk).update(action="forged")
    with pytest.raises(AuditEntryImmutableError):
        AuditEntry.objects.all().delete()
    assert AuditEntry.objects.get().action == "test.kept"


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the database's own refusal is PostgreSQL's trigger")
def test_the_database_refuses_a_raw_update(admin: User) -> None:
    audit_record(action="test.kept", target="something", actor=admin)
    with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE coordinator_auditentry SET action = 'forged'")
    assert AuditEntry.objects.get().action == "test.kept"


def test_deleting_the_actor_keeps_the_entry(admin: User) -> None:
    other = UserFactory(role=Role.USER)
    audit_record(action="test.kept", target="something", actor=other)
    other.delete()
    assert only_entry().actor_label == other.email


def test_an_admins_export_includes_the_trail_and_a_users_only_their_own(admin: User, user: User) -> None:
    audit_record(action="test.admins", target="a", actor=admin)
    audit_record(action="test.users", target="b", actor=user)
    assert [r["action"] for r in audit_export_rows(user=admin, everything=True)] == ["test.admins", "test.users"]
    assert [r["action"] for r in audit_export_rows(user=user, everything=False)] == ["test.users"]


def test_schedule_changes_over_the_api_write_one_entry_each(
    user: User, client_for: Callable[[User], APIClient]
) -> None:
    import tests.jobs.sample_jobs  # noqa: F401 - registers the test job types

    client = client_for(user)
    body = {"type": "test.main.add", "data": {"x": 1, "y": 2}, "cron": "59 23 * * *", "timezone": "Europe/Paris"}
    schedule_id = client.post("/v1/schedules", body, format="json").json()["id"]
    created = only_entry()
    assert (created.action, created.actor_id, created.after["cron"]) == ("schedule.create", user.pk, "59 23 * * *")
    client.patch(f"/v1/schedules/{schedule_id}", {"enabled": False}, format="json")
    [updated] = AuditEntry.objects.filter(pk__gt=created.pk)
    assert (updated.action, updated.before["enabled"], updated.after["enabled"]) == ("schedule.update", True, False)
    client.delete(f"/v1/schedules/{schedule_id}")
    [deleted] = AuditEntry.objects.filter(pk__gt=updated.pk)
    assert (deleted.action, deleted.before["type"]) == ("schedule.delete", "test.main.add")


def test_rollout_pause_and_resume_over_the_api_write_one_entry_each(
    master: User, client_for: Callable[[User], APIClient]
) -> None:
    from pool.services import device_create, task_create

    devices = [device_create(name=f"d{i}", kind="x", validated=True)[0] for i in range(2)]
    ids = ",".join(str(d.pk) for d in devices)
    task = task_create(user=master, to=f"device:[{ids}]", title="fw", meta={"rollout": {"per_minute": 1}})
    client = client_for(master)
    assert client.post(f"/pool/tasks/{task.msg_id}/pause").status_code == 200
    paused = only_entry()
    assert (paused.action, paused.actor_id, paused.target_id) == ("rollout.pause", master.pk, str(task.pk))
    assert client.post(f"/pool/tasks/{task.msg_id}/resume").status_code == 200
    [resumed] = AuditEntry.objects.filter(pk__gt=paused.pk)
    assert resumed.action == "rollout.resume"
