"""pytasks dialect: `/task`, `/task/<id>`, `/tasks`, `/ping`, `/token`, `/protected`, bodies as §3.3."""

from __future__ import annotations

import json
import time

import jwt
import pytest
from django.conf import settings
from rest_framework.test import APIClient

from jobs.models import Job
from jobs.services import job_execute
from tests.conftest import access_token_for
from tests.factories import DEFAULT_PASSWORD

pytestmark = pytest.mark.django_db


def post_task(client: APIClient, body, token: str | None = None):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    return client.post("/task", body, format="json", **headers)


def get_token(client: APIClient, email: str, password: str = DEFAULT_PASSWORD, method: str = "get"):
    # pytasks' clients send the credentials as the JSON body of a GET
    return client.generic(
        method.upper(), "/token", json.dumps({"user": email, "password": password}), content_type="application/json"
    )


def test_submit_and_follow_a_task_anonymously(anon_client):
    response = post_task(anon_client, {"type": "test.main.add", "args": {"x": 2, "y": 3}})
    assert response.status_code == 200
    body = response.json()
    assert body == {"id": body["id"], "type": "test.main.add", "status": "PENDING"}
    assert anon_client.get(f"/task/{body['id']}").json() == {"id": body["id"], "status": "PENDING", "result": {}}
    job_execute(job_id=Job.objects.get(uuid=body["id"]).pk)
    assert anon_client.get(f"/task/{body['id']}").json() == {"id": body["id"], "status": "SUCCESS", "result": 5}


def test_status_names_and_unknown_ids(anon_client):
    response = post_task(anon_client, {"type": "tests.fail", "args": {"message": "no"}})
    task_id = response.json()["id"]
    job_execute(job_id=Job.objects.get(uuid=task_id).pk)
    # failures carry no error text, as with Celery's FAILURE in pytasks
    assert anon_client.get(f"/task/{task_id}").json() == {"id": task_id, "status": "FAILURE", "result": {}}
    for unknown in ("00000000-0000-0000-0000-000000000000", "whatever"):
        assert anon_client.get(f"/task/{unknown}").json() == {"id": unknown, "status": "PENDING", "result": {}}


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({}, {"type": "You need to inform type", "args": "You need to inform args dict"}),
        ({"type": "test.main.add"}, {"args": "You need to inform args dict"}),
        ({"args": {}}, {"type": "You need to inform type"}),
        ({"type": "test.main.add", "args": [1]}, {"args": "You need to inform args dict"}),
    ],
)
def test_missing_type_or_args_is_400(anon_client, body, errors):
    response = post_task(anon_client, body)
    assert response.status_code == 400
    assert response.json() == {"errors": errors, "message": "Input payload validation failed"}


def test_unknown_type_and_argument_errors_are_404(anon_client):
    cases = [
        ({"type": "nope.main.x", "args": {}}, "task type nope.main.x doesnt exist"),
        ({"type": "test.main.add", "args": {"x": 1}}, "the required param y was not passed. "),
        (
            {"type": "test.main.add", "args": {"x": 1, "y": "2"}},
            "the passed param y doesnt match the required type: <class 'int'>.",
        ),
        (
            {"type": "test.main.hypot", "args": {"x": 1, "y": 2.0}},
            "the passed param x doesnt match the required type: <class 'float'>.",
        ),
        (
            {"type": "test.main.add", "args": {"x": True, "y": 2}},
            "the passed param x doesnt match the required type: <class 'int'>.",
        ),
        ({"type": "test.main.add", "args": {"x": 1, "y": 2, "z": 3}}, "the passed param z is not required."),
    ]
    for body, message in cases:
        response = post_task(anon_client, body)
        assert (response.status_code, response.json()) == (404, {"message": message}), body
    assert not Job.objects.exists()


def test_tasks_lists_types_with_authorization_and_argument_types(anon_client):
    body = anon_client.get("/tasks").json()
    assert body["test.main.add"] == {
        "require_authorization": False,
        "args": {"x": "<class 'int'>", "y": "<class 'int'>"},
    }
    assert body["test.main.hypot"]["args"] == {"x": "<class 'float'>", "y": "<class 'float'>"}
    assert body["test.main.myProtectedTask"]["require_authorization"] is True
    assert anon_client.get("/ping").json() == {"status": "online"}


def test_token_from_a_get_with_a_json_body_grants_the_users_protected_types(anon_client, user, admin):
    response = get_token(anon_client, admin.email)
    assert response.status_code == 200
    body = response.json()
    assert int(body["exp"]) > time.time()
    payload = jwt.decode(
        body["token"], settings.JWT_VERIFYING_KEY or settings.JWT_SIGNING_KEY, algorithms=[settings.JWT_ALGORITHM]
    )
    assert payload["allowed_tasks"]["test.main.myProtectedTask"] is True
    assert isinstance(payload["exp"], str)  # pytasks writes exp as a string
    # POST is accepted too; a plain user is granted no protected type
    plain = jwt.decode(
        get_token(anon_client, user.email, method="post").json()["token"],
        settings.JWT_VERIFYING_KEY or settings.JWT_SIGNING_KEY,
        algorithms=[settings.JWT_ALGORITHM],
    )
    assert plain["allowed_tasks"] == {}


def test_token_refuses_bad_credentials(anon_client, user):
    assert get_token(anon_client, user.email, "wrong-password").status_code == 401
    assert get_token(anon_client, "nobody@example.com").json() == {"message": "Invalid user or password."}
    response = anon_client.get("/token")
    assert response.status_code == 400 and response.json()["message"] == "Input payload validation failed"
    assert anon_client.generic("GET", "/token", "{oops", content_type="application/json").status_code == 400


def test_protected_task_with_and_without_authorization(anon_client, user, admin, settings):
    body = {"type": "test.main.myProtectedTask", "args": {"x": 6, "y": 7}}
    response = post_task(anon_client, body)
    assert (response.status_code, response.json()) == (
        401,
        {"message": "This endpoint requires the 'Authentication: Bearer JWT_token' header."},
    )

    admin_token = get_token(anon_client, admin.email).json()["token"]
    response = post_task(anon_client, body, admin_token)
    assert response.status_code == 200
    job = Job.objects.get(uuid=response.json()["id"])
    assert job.created_by == admin
    job_execute(job_id=job.pk)
    assert anon_client.get(f"/task/{job.uuid}").json()["result"] == 42

    user_token = get_token(anon_client, user.email).json()["token"]
    response = post_task(anon_client, body, user_token)
    assert response.json() == {"message": "The payload in your JWT is not valid."}

    key, alg = settings.JWT_SIGNING_KEY, settings.JWT_ALGORITHM
    denied = jwt.encode({"allowed_tasks": {"test.main.myProtectedTask": False}}, key, algorithm=alg)
    assert post_task(anon_client, body, denied).json() == {"message": "You don't have permission to use this tasktype."}
    expired = jwt.encode(
        {"allowed_tasks": {"test.main.myProtectedTask": True}, "exp": str(int(time.time()) - 10)}, key, algorithm=alg
    )
    assert post_task(anon_client, body, expired).json() == {"message": "This token signature has expired."}
    forged = jwt.encode(
        {"allowed_tasks": {"test.main.myProtectedTask": True}},
        "another-key-that-is-long-enough-for-hs256",
        algorithm="HS256",
    )
    response = post_task(anon_client, body, forged)
    assert response.status_code == 401 and response.json()["message"] in {
        "This token has invalid signature.",
        "This token is invalid",
    }
    assert post_task(anon_client, body, "garbage").json() == {"message": "This token is invalid"}


def test_platform_access_tokens_work_through_the_users_permissions(anon_client, user, admin):
    body = {"type": "test.main.myProtectedTask", "args": {"x": 1, "y": 1}}
    assert post_task(anon_client, body, access_token_for(admin)).status_code == 200
    response = post_task(anon_client, body, access_token_for(user))
    assert (response.status_code, response.json()) == (
        401,
        {"message": "You don't have permission to use this tasktype."},
    )


def test_protected_returns_the_decoded_payload(anon_client, admin):
    token = get_token(anon_client, admin.email).json()["token"]
    anon_client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    payload = anon_client.get("/protected").json()
    assert payload["allowed_tasks"]["test.main.myProtectedTask"] is True and "exp" in payload
    anon_client.credentials()
    response = anon_client.get("/protected")
    assert response.status_code == 401 and response.json()["message"].startswith("This endpoint requires")


def test_token_without_expiry(anon_client, admin, settings):
    settings.JOBS_TOKEN_EXPIRE_SEC = 0
    body = get_token(anon_client, admin.email).json()
    assert body["exp"] == "infinity"
    payload = jwt.decode(
        body["token"], settings.JWT_VERIFYING_KEY or settings.JWT_SIGNING_KEY, algorithms=[settings.JWT_ALGORITHM]
    )
    assert "exp" not in payload


def test_nul_bytes_in_credentials_or_arguments_are_client_errors(anon_client):
    assert get_token(anon_client, "a\x00@example.com").status_code == 401
    response = post_task(anon_client, {"type": "tests.fail", "args": {"message": "a\x00b"}})
    assert response.status_code == 404 and not Job.objects.exists()


def test_delay_and_unique_key_on_task(anon_client):
    body = {"type": "test.main.add", "args": {"x": 1, "y": 2}, "delay_seconds": 30, "unique_key": "sum"}
    first = anon_client.post("/task", body, format="json")
    again = anon_client.post("/task", body, format="json")
    assert first.json() == {"id": first.json()["id"], "type": "test.main.add", "status": "PENDING"}
    assert again.status_code == 200 and again["Job-Existing"] == "true"
    assert again.json() == {"id": first.json()["id"], "type": "test.main.add", "status": "PENDING", "existing": True}
    job = Job.objects.get()
    assert job.status == "fresh" and job.run_after is not None
    bad = anon_client.post("/task", {**body, "delay_seconds": "soon"}, format="json")
    assert bad.status_code == 400
    assert bad.json() == {
        "errors": {"delay_seconds": "delay_seconds must be a number from 0 to 31622400."},
        "message": "Input payload validation failed",
    }


def test_a_run_after_before_the_first_utc_time_is_400_not_500(anon_client):
    body = {"type": "test.main.add", "args": {"x": 1, "y": 2}, "run_after": "0001-01-01T00:00:00+14:00"}
    response = anon_client.post("/task", body, format="json")
    assert response.status_code == 400
    assert response.json()["errors"] == {"run_after": "run_after is out of range."}
    assert not Job.objects.exists()
