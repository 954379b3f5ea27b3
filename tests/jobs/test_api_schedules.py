"""`/v1/schedules` over HTTP: owner and admin rules, validation in the envelope, next and last runs."""

from __future__ import annotations

import pytest
from django.utils import timezone

from jobs.models import JobSchedule
from jobs.schedules import schedules_fire_due

pytestmark = pytest.mark.django_db

BODY = {"type": "test.main.add", "data": {"x": 1, "y": 2}, "cron": "59 23 * * *", "timezone": "Europe/Paris"}


def test_create_read_change_and_delete_a_schedule(user, client_for):
    client = client_for(user)
    created = client.post("/v1/schedules", BODY, format="json")
    assert created.status_code == 201, created.content
    body = created.json()
    assert (body["type"], body["cron"], body["timezone"], body["enabled"], body["missed"], body["owner"]) == (
        "test.main.add",
        "59 23 * * *",
        "Europe/Paris",
        True,
        "skip",
        user.pk,
    )
    assert len(body["next_runs"]) == 5 and body["last_runs"] == []
    url = f"/v1/schedules/{body['id']}"
    assert client.get(url).json()["next_runs"] == body["next_runs"]
    changed = client.patch(url, {"interval_seconds": 3600, "missed": "catch_up"}, format="json").json()
    assert (changed["cron"], changed["interval_seconds"], changed["missed"]) == ("", 3600, "catch_up")
    paused = client.patch(url, {"enabled": False}, format="json").json()
    assert paused["next_runs"] == []
    assert client.get("/v1/schedules").json()["count"] == 1
    assert client.delete(url).status_code == 204 and not JobSchedule.objects.exists()


def test_last_runs_show_the_jobs_with_their_status(user, client_for):
    client = client_for(user)
    schedule_id = client.post("/v1/schedules", {**BODY, "cron": "* * * * *"}, format="json").json()["id"]
    JobSchedule.objects.filter(pk=schedule_id).update(next_run_at=timezone.now())
    schedules_fire_due()
    runs = client.get(f"/v1/schedules/{schedule_id}").json()["last_runs"]
    assert len(runs) == 1 and runs[0]["status"] == "fresh" and runs[0]["job_id"] is not None
    assert client.get(f"/v1/tasks/{runs[0]['job_id']}").json()["type"] == "test.main.add"


def test_only_the_owner_or_an_admin_sees_or_changes_a_schedule(user, master, admin, client_for):
    schedule_id = client_for(user).post("/v1/schedules", BODY, format="json").json()["id"]
    url = f"/v1/schedules/{schedule_id}"
    attacker = client_for(master)
    for response in (
        attacker.get(url),
        attacker.patch(url, {"enabled": False}, format="json"),
        attacker.delete(url),
    ):
        assert response.status_code == 404 and response.json()["code"] == "schedule_not_found"
    assert attacker.get("/v1/schedules").json()["count"] == 0
    assert JobSchedule.objects.get().enabled
    assert client_for(admin).patch(url, {"enabled": False}, format="json").status_code == 200
    assert client_for(admin).get("/v1/schedules").json()["count"] == 1


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"cron": "every day"}, 400, "invalid_schedule"),
        ({"cron": "0 0 30 2 *"}, 400, "invalid_schedule"),  # never matches: croniter gives up (was a 500)
        ({"interval_seconds": 60}, 400, "invalid_schedule"),  # two ways to say when
        ({"timezone": "Nowhere/Else"}, 400, "invalid_schedule"),
        ({"missed": "sometimes"}, 400, "validation_error"),
        ({"data": {"x": "one", "y": 2}}, 400, "invalid_job_arguments"),
        ({"type": "test.main.myProtectedTask"}, 403, "job_not_allowed"),
        ({"type": "nope"}, 422, "unknown_job_type"),
        ({"run_at": "soon", "cron": None}, 400, "validation_error"),
        ({"timezone": "Europe/Par\x00is"}, 400, "validation_error"),
    ],
)
def test_bad_schedules_are_4xx_in_the_envelope_and_create_nothing(user, client_for, change, status, code):
    body = {key: value for key, value in {**BODY, **change}.items() if value is not None}
    response = client_for(user).post("/v1/schedules", body, format="json")
    assert response.status_code == status and response.json()["code"] == code
    assert not JobSchedule.objects.exists()


def test_a_cron_that_never_matches_is_refused_on_change_too(user, client_for):
    client = client_for(user)
    url = f"/v1/schedules/{client.post('/v1/schedules', BODY, format='json').json()['id']}"
    response = client.patch(url, {"cron": "0 0 31 4,6,9,11 *"}, format="json")
    assert response.status_code == 400 and response.json()["code"] == "invalid_schedule"
    assert JobSchedule.objects.get().cron == BODY["cron"]


def test_the_schedule_cap_is_409_in_the_envelope(user, client_for, settings):
    settings.SCHEDULES_PER_OWNER = 1
    client = client_for(user)
    assert client.post("/v1/schedules", BODY, format="json").status_code == 201
    refused = client.post("/v1/schedules", BODY, format="json")
    assert refused.status_code == 409 and refused.json()["code"] == "too_many_schedules"
    assert JobSchedule.objects.count() == 1


def test_schedules_need_a_platform_user(anon_client):
    assert anon_client.get("/v1/schedules").status_code == 401
    assert anon_client.post("/v1/schedules", BODY, format="json").status_code == 401
