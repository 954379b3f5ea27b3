"""Staff with fewer rights than an admin attack the admin, as the security review did: every
action and button that changes state must refuse them and leave the rows as they were."""

import pytest
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.test import Client

from coordinator.models import Role, User
from jobs.models import Job
from pool import services as pool_services
from tests.factories import DEFAULT_PASSWORD, UserFactory

pytestmark = pytest.mark.django_db


def _staff_with(*codenames: str) -> User:
    staff = UserFactory(role=Role.USER, is_staff=True)
    staff.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return staff


def _view_only() -> User:
    return _staff_with(*Permission.objects.filter(codename__startswith="view_").values_list("codename", flat=True))


def _logged_in(user: User) -> Client:
    client = Client()
    assert client.login(username=user.email, password=DEFAULT_PASSWORD)
    return client


def _action(client: Client, url: str, action: str, *pks: object) -> None:
    client.post(url, {"action": action, "_selected_action": [str(pk) for pk in pks]})


def test_view_only_staff_cannot_make_itself_admin_or_demote_or_deactivate() -> None:
    real_admin = UserFactory(role=Role.ADMIN)
    other = UserFactory(role=Role.MASTER)
    attacker = _view_only()
    client = _logged_in(attacker)
    url = "/admin/coordinator/user/"
    assert client.get(url).status_code == 200  # it may look
    _action(client, url, "make_admin", attacker.pk)
    _action(client, url, "make_user", real_admin.pk)
    _action(client, url, "deactivate", real_admin.pk, other.pk)
    attacker.refresh_from_db(), real_admin.refresh_from_db(), other.refresh_from_db()
    assert (attacker.role, attacker.is_superuser) == (Role.USER, False)
    assert (real_admin.role, real_admin.is_active) == (Role.ADMIN, True)
    assert other.is_active


def test_staff_who_may_change_users_still_cannot_grant_the_admin_role() -> None:
    attacker = _staff_with("view_user", "change_user")
    real_admin = UserFactory(role=Role.ADMIN)
    client = _logged_in(attacker)
    _action(client, "/admin/coordinator/user/", "make_admin", attacker.pk)
    # Through the change form: the access fields are read-only for it, so posting them does nothing.
    client.post(
        f"/admin/coordinator/user/{attacker.pk}/change/",
        {
            "email": attacker.email,
            "name": "x",
            "role": Role.ADMIN,
            "is_active": "on",
            "is_staff": "on",
            "user_permissions": [p.pk for p in Permission.objects.all()],
            "last_login_0": "",
            "last_login_1": "",
            "date_joined_0": "2026-01-01",
            "date_joined_1": "00:00:00",
        },
    )
    # An admin's own page (its password, its email) is out of reach too.
    page = client.get(f"/admin/coordinator/user/{real_admin.pk}/change/")
    assert page.status_code == 200 and b'name="_save"' not in page.content  # shown read-only
    assert client.post(
        f"/admin/coordinator/user/{real_admin.pk}/password/",
        {"password1": "taken-over-pass-1", "password2": "taken-over-pass-1"},
    ).status_code in {302, 403}
    attacker.refresh_from_db(), real_admin.refresh_from_db()
    assert attacker.role == Role.USER and not attacker.is_superuser
    assert attacker.user_permissions.count() == 2
    assert real_admin.check_password(DEFAULT_PASSWORD)
    _action(client, "/admin/coordinator/user/", "make_user", real_admin.pk)
    real_admin.refresh_from_db()
    assert real_admin.role == Role.ADMIN


def test_an_admin_demoted_loses_staff_status_and_the_last_admin_stays() -> None:
    boss = UserFactory(role=Role.ADMIN)
    demoted = UserFactory(role=Role.ADMIN)
    client = _logged_in(boss)
    _action(client, "/admin/coordinator/user/", "make_master", demoted.pk)
    demoted.refresh_from_db()
    assert (demoted.role, demoted.is_staff, demoted.is_superuser) == (Role.MASTER, False, False)
    _action(client, "/admin/coordinator/user/", "make_user", boss.pk)
    boss.refresh_from_db()
    assert boss.role == Role.ADMIN  # the last active admin keeps the role
    assert _logged_in(demoted).get("/admin/").status_code == 302


def test_view_only_staff_cannot_issue_a_device_secret_or_change_devices() -> None:
    device, secret = pool_services.device_create(name="sensor", validated=True)
    client = _logged_in(_view_only())
    for action in ("issue_secret", "disable", "validate"):
        _action(client, "/admin/pool/device/", action, device.pk)
    device.refresh_from_db()
    assert device.enabled
    assert pool_services.device_token_issue(device_id=device.pk, secret=secret)  # the old secret still works


def test_view_only_staff_cannot_retry_or_cancel_jobs() -> None:
    failed = Job.objects.create(type="test.main.add", data={}, status=Job.Status.FAILURE)
    fresh = Job.objects.create(type="test.main.add", data={}, status=Job.Status.FRESH)
    client = _logged_in(_view_only())
    assert client.post(f"/admin/jobs/job/{failed.pk}/retry/").status_code == 403
    assert client.post(f"/admin/jobs/job/{fresh.pk}/cancel/").status_code == 403
    _action(client, "/admin/jobs/job/", "retry_jobs", failed.pk)
    _action(client, "/admin/jobs/job/", "cancel_jobs", fresh.pk)
    assert client.get("/admin/jobs/job/submit/").status_code == 403
    page = client.get(f"/admin/jobs/job/{failed.pk}/change/")
    assert page.status_code == 200 and b"jobs/job/%d/retry/" % failed.pk not in page.content
    failed.refresh_from_db(), fresh.refresh_from_db()
    assert (failed.status, fresh.status, fresh.cancel_requested) == (Job.Status.FAILURE, Job.Status.FRESH, False)


def test_staff_with_the_change_permission_may_retry() -> None:
    failed = Job.objects.create(type="test.main.add", data={"a": 1, "b": 2}, status=Job.Status.FAILURE)
    client = _logged_in(_staff_with("view_job", "change_job"))
    client.post(f"/admin/jobs/job/{failed.pk}/retry/")
    failed.refresh_from_db()
    assert failed.status == Job.Status.FRESH


def test_view_only_staff_cannot_cancel_device_tasks() -> None:
    device, _ = pool_services.device_create(name="d", validated=True)
    task = pool_services.task_create(to=f"device:{device.pk}", title="reboot", body="", meta={}, user=None)
    _action(_logged_in(_view_only()), "/admin/pool/task/", "cancel", task.pk)
    task.refresh_from_db()
    assert task.cancelled_at is None


def test_createuser_without_role_keeps_the_role() -> None:
    admin = UserFactory(role=Role.ADMIN)
    call_command("createuser", admin.email, "--password", "a-new-admin-pass-1")
    admin.refresh_from_db()
    assert admin.role == Role.ADMIN and admin.is_staff and admin.check_password("a-new-admin-pass-1")
    call_command("createuser", "fresh@example.com", "--password", "a-new-user-pass-1")
    assert User.objects.get(email="fresh@example.com").role == Role.USER


def test_staff_see_only_their_own_progress_on_the_live_page_and_the_list() -> None:
    from tests.progress.conftest import publish

    staff = _staff_with("view_progresstopic")
    stranger = UserFactory(role=Role.USER)
    publish("run:mine", "new", "my own run", owner_id=staff.pk)
    publish("run:theirs", "new", "a stranger's secret run", owner_id=stranger.pk)
    client = _logged_in(staff)
    for url in ("/admin/progress/progresstopic/live/", "/admin/progress/progresstopic/"):
        page = client.get(url).content.decode()
        assert "my own run" in page, url
        assert "secret run" not in page, url
    admin_page = _logged_in(UserFactory(role=Role.ADMIN)).get("/admin/progress/progresstopic/live/").content.decode()
    assert "my own run" in admin_page and "secret run" in admin_page


def test_view_only_staff_cannot_restart_farm_runs() -> None:
    from farm import services as farm_services
    from farm.models import Task

    owner = UserFactory()
    run = farm_services.run_create(owner=owner, num_tasks=2)
    worker = farm_services.worker_register(owner=owner, uuid="w", hostname="h", pid=1)
    farm_services.tasks_claim(run=run, worker=worker, limit=2)
    Task.objects.filter(run=run).update(status=Task.Status.DONE, percent_completed=100)
    client = _logged_in(_view_only())
    for action in ("restart_incomplete", "restart_all"):
        _action(client, "/admin/farm/run/", action, run.pk)
    assert set(Task.objects.filter(run=run).values_list("status", flat=True)) == {Task.Status.DONE}
    allowed = _logged_in(_staff_with("view_run", "change_run"))
    _action(allowed, "/admin/farm/run/", "restart_all", run.pk)
    assert set(Task.objects.filter(run=run).values_list("status", flat=True)) == {Task.Status.WAITING}


def test_view_only_staff_cannot_add_change_pause_or_delete_a_schedule() -> None:
    from jobs.models import JobSchedule
    from jobs.schedules import schedule_create

    owner = UserFactory(role=Role.USER)
    schedule = schedule_create(owner=owner, type="test.main.add", data={"x": 1, "y": 2}, cron="0 6 * * *")
    attacker = _logged_in(_view_only())
    assert attacker.get("/admin/jobs/jobschedule/add/").status_code == 403
    fields = {"type": "test.main.add", "x": "9", "y": "9", "schedule_interval_seconds": "1", "schedule_timezone": "UTC"}
    assert attacker.post("/admin/jobs/jobschedule/add/?type=test.main.add", fields).status_code == 403
    page = attacker.post(f"/admin/jobs/jobschedule/{schedule.pk}/change/", {**fields, "schedule_missed": "skip"})
    assert page.status_code == 200 and 'name="schedule_cron"' not in page.content.decode()
    _action(attacker, "/admin/jobs/jobschedule/", "pause", schedule.pk)
    attacker.post(f"/admin/jobs/jobschedule/{schedule.pk}/delete/", {"post": "yes"})
    schedule.refresh_from_db()
    assert (schedule.enabled, schedule.cron, schedule.data, JobSchedule.objects.count()) == (
        True,
        "0 6 * * *",
        {"x": 1, "y": 2},
        1,
    )


def test_every_admin_action_declares_a_permission_beyond_viewing() -> None:
    """Each action of each registered admin (ours, and the libraries' pages we serve) needs a
    permission that changes something: an action without `permissions=` is offered to whoever may
    view the list, which is how view-only staff re-ran django-q2's queue tasks."""
    from django.contrib import admin

    undeclared = []
    for model, model_admin in admin.site._registry.items():
        for action in [*model_admin.actions, *dict(admin.site.actions).values()]:
            func = getattr(model_admin, action) if isinstance(action, str) else action
            needs = set(getattr(func, "allowed_permissions", ()))
            if not needs or needs <= {"view"}:
                undeclared.append(f"{model._meta.label}: {getattr(func, '__name__', action)}")
    assert undeclared == []


def test_view_only_staff_cannot_resubmit_or_delete_the_clusters_queue_tasks() -> None:
    from django.utils import timezone
    from django_q.models import Failure, OrmQ, Success

    now = timezone.now()
    fields = {"func": "coordinator.services.operations_record", "started": now, "stopped": now}
    done = Success.objects.create(id="a" * 32, name="done", success=True, **fields)
    failed = Failure.objects.create(id="b" * 32, name="failed", success=False, **fields)
    client = _logged_in(_view_only())
    assert client.get("/admin/django_q/success/").status_code == 200  # it may look
    _action(client, "/admin/django_q/success/", "resubmit_task", done.pk)
    _action(client, "/admin/django_q/failure/", "resubmit_task", failed.pk)
    _action(client, "/admin/django_q/success/", "resubmit_queue_tasks", done.pk)
    _action(client, "/admin/django_q/failure/", "resubmit_queue_tasks", failed.pk)
    assert OrmQ.objects.count() == 0  # nothing queued again
    assert Failure.objects.filter(pk=failed.pk).exists()  # and the failure kept
    operator = _logged_in(_staff_with("view_failure", "change_failure"))
    _action(operator, "/admin/django_q/failure/", "resubmit_queue_tasks", failed.pk)
    assert OrmQ.objects.count() == 1 and not Failure.objects.filter(pk=failed.pk).exists()


def test_only_admins_write_the_clusters_schedules_which_name_any_function() -> None:
    from django_q.models import Schedule

    staff = _logged_in(_staff_with("view_schedule", "add_schedule", "change_schedule", "delete_schedule"))
    form = {"name": "x", "func": "os.system", "args": "'touch /tmp/owned'", "schedule_type": "O", "repeats": "-1"}
    assert (
        staff.post(
            "/admin/django_q/schedule/add/", {**form, "next_run_0": "2026-01-01", "next_run_1": "00:00"}
        ).status_code
        == 403
    )
    assert not Schedule.objects.filter(func="os.system").exists()
    existing = Schedule.objects.create(name="minute", func="coordinator.services.operations_record", schedule_type="I")
    staff.post(
        f"/admin/django_q/schedule/{existing.pk}/change/", {**form, "next_run_0": "2026-01-01", "next_run_1": "00:00"}
    )
    staff.post(f"/admin/django_q/schedule/{existing.pk}/delete/", {"post": "yes"})
    existing.refresh_from_db()
    assert existing.func == "coordinator.services.operations_record"
    admin = _logged_in(UserFactory(role=Role.ADMIN))
    assert admin.get("/admin/django_q/schedule/add/").status_code == 200


def test_staff_who_may_change_schedules_cannot_rewrite_one_that_runs_as_an_admin() -> None:
    """A schedule runs with its owner's rights: staff with the change permission turned an admin's
    export into an export of everything, run as the admin."""
    from jobs.schedules import schedule_create

    admins = schedule_create(
        owner=UserFactory(role=Role.ADMIN), type="json_export", data={"everything": False}, cron="0 6 * * *"
    )
    masters = schedule_create(
        owner=UserFactory(role=Role.MASTER), type="jsonl_import", data={"filename": "mine.jsonl"}, cron="0 6 * * *"
    )
    users = schedule_create(owner=UserFactory(), type="test.main.add", data={"x": 1, "y": 2}, cron="0 6 * * *")
    attacker = _logged_in(_staff_with("view_jobschedule", "change_jobschedule"))
    when = {
        "schedule_cron": "0 6 * * *",
        "schedule_timezone": "UTC",
        "schedule_enabled": "on",
        "schedule_missed": "skip",
    }
    attacker.post(f"/admin/jobs/jobschedule/{admins.pk}/change/", {"type": "json_export", "everything": "on", **when})
    attacker.post(f"/admin/jobs/jobschedule/{masters.pk}/change/", {"filename": "theirs.jsonl", **when})
    attacker.post(f"/admin/jobs/jobschedule/{users.pk}/change/", {"x": "5", "y": "5", **when})
    admins.refresh_from_db(), masters.refresh_from_db(), users.refresh_from_db()
    assert admins.data == {"everything": False}
    assert masters.data == {"filename": "mine.jsonl"}
    assert users.data == {"x": 5, "y": 5}  # a schedule of an open type it may still change
