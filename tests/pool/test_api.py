from __future__ import annotations

from datetime import timedelta

import jwt
import pytest
from django.conf import settings
from django.utils import timezone
from rest_framework.test import APIClient

from pool.models import Delivery, Device, Message
from pool.services import task_create
from pool.tokens import device_token_encode
from tests.pool.conftest import device_client

DEVICE_ENDPOINTS = [
    ("get", "/pool/pending", None),
    ("post", "/pool/heartbeat", {}),
    ("post", "/pool/response", {"parent_id": "msg_" + "0" * 32, "status": "done"}),
]
USER_ENDPOINTS = [
    ("post", "/pool/task", {"to": "device:*", "title": "t"}),
    ("get", "/pool/log", None),
    ("get", "/pool/devices", None),
]


def call(client: APIClient, method: str, path: str, body):
    if method == "get":
        return client.get(path)
    return client.post(path, body, format="json")


@pytest.fixture
def callers(make_device, user, master, admin, client_for):
    return {
        "anonymous": APIClient(),
        "device": device_client(make_device("ok")),
        "disabled_device": device_client(make_device("off", enabled=False)),
        "unvalidated_device": device_client(make_device("new", validated=False)),
        "user": client_for(user),
        "master": client_for(master),
        "admin": client_for(admin),
    }


# Expected status per caller; the device's response to an unknown task is a 404.
DEVICE_EXPECTED = {
    "anonymous": 401,
    "disabled_device": 403,
    "unvalidated_device": 403,
    "user": 403,
    "master": 403,
    "admin": 403,
}
USER_EXPECTED = {
    "/pool/task": {
        "anonymous": 401,
        "device": 401,
        "disabled_device": 401,
        "unvalidated_device": 401,
        "user": 403,
        "master": 201,
        "admin": 201,
    },
    "/pool/log": {
        "anonymous": 401,
        "device": 401,
        "disabled_device": 401,
        "unvalidated_device": 401,
        "user": 403,
        "master": 403,
        "admin": 200,
    },
    "/pool/devices": {
        "anonymous": 401,
        "device": 401,
        "disabled_device": 401,
        "unvalidated_device": 401,
        "user": 403,
        "master": 403,
        "admin": 200,
    },
}


def test_every_endpoint_for_every_caller(callers):
    for method, path, body in DEVICE_ENDPOINTS:
        expected = {
            **DEVICE_EXPECTED,
            "device": {"get": 200, "/pool/heartbeat": 201}.get(method if method == "get" else path, 404),
        }
        for who, client in callers.items():
            response = call(client, method, path, body)
            assert response.status_code == expected[who], (who, path, response.content)
            if response.status_code >= 400:
                assert set(response.json()) == {"code", "message", "extra"}
    for method, path, body in USER_ENDPOINTS:
        for who, client in callers.items():
            response = call(client, method, path, body)
            assert response.status_code == USER_EXPECTED[path][who], (who, path, response.content)


def test_disabled_device_is_refused_with_an_unexpired_token(device):
    client = device_client(device)
    assert client.get("/pool/pending").status_code == 200
    Device.objects.filter(pk=device.pk).update(enabled=False)
    response = client.get("/pool/pending")
    assert response.status_code == 403 and response.json()["code"] == "device_disabled"
    Device.objects.filter(pk=device.pk).update(enabled=True, validated=False)
    assert client.get("/pool/pending").json()["code"] == "device_not_validated"


def test_register_then_token_after_validation(anon_client, db):
    response = anon_client.post("/pool/register", {"name": "pi-7", "kind": "raspberry"}, format="json")
    assert response.status_code == 201
    device_id, secret = response.json()["device_id"], response.json()["secret"]
    assert response.json()["validated"] is False
    assert Device.objects.get(pk=device_id).secret_hash != secret

    refused = anon_client.post("/pool/token", {"device_id": device_id, "secret": secret}, format="json")
    assert refused.status_code == 403 and refused.json()["code"] == "device_not_validated"

    Device.objects.filter(pk=device_id).update(validated=True)
    wrong = anon_client.post("/pool/token", {"device_id": device_id, "secret": secret + "x"}, format="json")
    assert wrong.status_code == 401 and wrong.json()["code"] == "invalid_credentials"
    ok = anon_client.post("/pool/token", {"device_id": device_id, "secret": secret}, format="json")
    assert ok.status_code == 200 and ok.json()["exp"].endswith("Z")
    claims = jwt.decode(ok.json()["token"], settings.JWT_SIGNING_KEY, algorithms=[settings.JWT_ALGORITHM])
    assert claims["sub"] == str(device_id) and claims["device_id"] == device_id
    assert claims["token_type"] == "device"

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {ok.json()['token']}")
    assert client.get("/pool/pending").status_code == 200


@pytest.mark.parametrize(
    "body",
    [{}, {"name": ""}, {"name": 5 * "x" * 100}, {"name": ["a"]}, {"name": "a\x00b"}],
)
def test_register_rejects_bad_input(anon_client, db, body):
    response = anon_client.post("/pool/register", body, format="json")
    assert response.status_code == 400 and response.json()["code"] == "validation_error"


@pytest.mark.parametrize("device_id", [0, -1, 2**64, "abc", None, True])
def test_token_rejects_bad_ids(anon_client, db, device_id):
    response = anon_client.post("/pool/token", {"device_id": device_id, "secret": "s"}, format="json")
    assert response.status_code == 400


def test_unknown_device_token_request_is_401(anon_client, db):
    response = anon_client.post("/pool/token", {"device_id": 99999, "secret": "s"}, format="json")
    assert response.status_code == 401


def _bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def test_forged_expired_and_wrong_kind_tokens(device, user, client_for):
    now = timezone.now()
    claims = {
        "token_type": "device",
        "sub": str(device.pk),
        "device_id": device.pk,
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(hours=1)).timestamp()),
        "jti": "x",
    }
    forged = jwt.encode(claims, "not-the-key-" * 4, algorithm="HS256")
    response = _bearer(forged).get("/pool/pending")
    assert response.status_code == 401 and response.json()["code"] == "invalid_token"

    expired, _ = device_token_encode(device_id=device.pk, now=now - timedelta(days=30))
    response = _bearer(expired).get("/pool/pending")
    assert response.status_code == 401 and response.json()["code"] == "token_expired"

    # Someone else's device id in `sub` but ours in `device_id`: refused.
    mixed = jwt.encode({**claims, "sub": "424242"}, settings.JWT_SIGNING_KEY, algorithm=settings.JWT_ALGORITHM)
    assert _bearer(mixed).get("/pool/pending").status_code == 401

    # A user token never acts as a device, a device token never acts as a user.
    assert client_for(user).get("/pool/pending").status_code == 403
    assert device_client(device).get("/auth/me/").status_code == 401
    assert _bearer("garbage").get("/pool/pending").status_code == 401


def test_device_token_with_user_claims_does_not_pass_user_endpoints(device, admin):
    # Even carrying an admin's user_id, a device-kind token is refused by the user authenticator.
    token, _ = device_token_encode(device_id=device.pk)
    claims = jwt.decode(token, settings.JWT_SIGNING_KEY, algorithms=[settings.JWT_ALGORITHM])
    claims["user_id"] = admin.pk
    sneaky = jwt.encode(claims, settings.JWT_SIGNING_KEY, algorithm=settings.JWT_ALGORITHM)
    assert _bearer(sneaky).get("/pool/devices").status_code == 401


def test_task_create_validates_target(client_for, master, make_device):
    d1 = make_device("a")
    client = client_for(master)
    bad = client.post("/pool/task", {"to": "devices:1", "title": "x"}, format="json")
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_target"
    assert "device:*" in bad.json()["message"]
    unknown = client.post("/pool/task", {"to": f"device:[{d1.pk},777,778]"}, format="json")
    assert unknown.status_code == 400 and unknown.json()["code"] == "unknown_devices"
    assert unknown.json()["extra"]["unknown"] == [777, 778]
    assert "777" in unknown.json()["message"]
    for to in ["device:[]", "device:[1.5]", "device:[1,", "device:99999999999999999999999", "user:x", "", "device:"]:
        response = client.post("/pool/task", {"to": to}, format="json")
        assert response.status_code == 400, to
    past = client.post("/pool/task", {"to": "device:*", "expires_at": "2001-01-01T00:00:00Z"}, format="json")
    assert past.status_code == 400
    assert client.post("/pool/task", {"to": "device:*", "meta": "no"}, format="json").status_code == 400
    assert client.post("/pool/task", {"to": "device:*", "meta": {"a": "\x00"}}, format="json").status_code == 400
    huge = client.post("/pool/task", {"to": "device:*", "meta": {"n": 2**80}}, format="json")
    assert huge.status_code == 201
    assert client.post("/pool/task", "{not json", content_type="application/json").status_code == 400
    assert Message.objects.count() == 1


def test_task_create_returns_the_seed_message(client_for, master, make_device):
    d1, d2 = make_device("a"), make_device("b")
    response = client_for(master).post(
        "/pool/task",
        {"to": f'device:[{d2.pk}, "{d1.pk}", {d2.pk}]', "title": "t", "body": "b", "meta": {"k": 1}},
        format="json",
    )
    assert response.status_code == 201
    body = response.json()
    assert list(body) == ["id", "ts", "from", "to", "type", "title", "body", "parent_id", "meta"]
    assert body["id"].startswith("msg_") and len(body["id"]) == 36
    assert body["ts"].endswith("Z") and len(body["ts"]) == 20
    assert body["from"] == f"user:{master.email}"
    assert body["to"] == f"device:[{d1.pk},{d2.pk}]"
    assert body["type"] == "task" and body["parent_id"] is None and body["meta"] == {"k": 1}
    assert Delivery.objects.filter(task__msg_id=body["id"]).count() == 2


def test_response_flow_and_conflicts(make_device, master):
    d1, d2 = make_device("a"), make_device("b")
    task = task_create(user=master, to=f"device:{d1.pk}", title="t")
    c1, c2 = device_client(d1), device_client(d2)
    # Another device can neither see nor answer it.
    assert c2.get("/pool/pending").json() == []
    other = c2.post("/pool/response", {"parent_id": task.msg_id, "status": "done"}, format="json")
    assert other.status_code == 404 and other.json()["code"] == "task_not_found"

    progress = c1.post(
        "/pool/response", {"parent_id": task.msg_id, "meta": {"status": "progress", "progress": 40}}, format="json"
    )
    assert progress.status_code == 201
    assert progress.json()["meta"] == {"status": "progress", "progress": 40}
    assert progress.json()["from"] == f"device:{d1.pk}" and progress.json()["to"] == f"user:{master.email}"
    assert progress.json()["type"] == "response" and progress.json()["parent_id"] == task.msg_id
    assert [m["id"] for m in c1.get("/pool/pending").json()] == [task.msg_id]
    assert Delivery.objects.get(task=task).progress == 40

    done = c1.post("/pool/response", {"parent_id": task.msg_id, "status": "done", "body": "ok"}, format="json")
    assert done.status_code == 201 and done.json()["meta"]["status"] == "done"
    assert c1.get("/pool/pending").json() == []
    again = c1.post("/pool/response", {"parent_id": task.msg_id, "status": "failed"}, format="json")
    assert again.status_code == 409 and again.json()["code"] == "already_answered"


@pytest.mark.parametrize(
    "body",
    [
        {"parent_id": "x"},
        {"parent_id": "x", "status": "finished"},
        {"parent_id": "x", "status": "done", "meta": {"status": "failed"}},
        {"parent_id": "x", "meta": {"status": 3}},
        {"status": "done"},
        {"parent_id": ["x"], "status": "done"},
        {"parent_id": "x", "status": "done", "meta": []},
    ],
)
def test_response_rejects_bad_input(device, body):
    response = device_client(device).post("/pool/response", body, format="json")
    assert response.status_code == 400 and response.json()["code"] == "validation_error"


def test_response_to_a_non_task_is_404(device, master):
    beat = device_client(device).post("/pool/heartbeat", {"body": "alive"}, format="json")
    assert beat.status_code == 201 and beat.json()["type"] == "heartbeat"
    response = device_client(device).post(
        "/pool/response", {"parent_id": beat.json()["id"], "status": "done"}, format="json"
    )
    assert response.status_code == 404


def test_heartbeat_updates_last_activity(device, admin, client_for):
    assert device_client(device).post("/pool/heartbeat", {}, format="json").status_code == 201
    row = next(d for d in client_for(admin).get("/pool/devices").json() if d["id"] == device.pk)
    assert row["online"] is True and row["last_activity_type"] == "heartbeat"
    assert row["last_activity_at"] is not None


def test_devices_list_shape_and_pending_counts(make_device, master, admin, client_for):
    d1, d2 = make_device("a"), make_device("b", validated=False)
    task_create(user=master, to="device:*")
    task_create(user=master, to=f"device:[{d1.pk},{d2.pk}]")
    rows = {d["id"]: d for d in client_for(admin).get("/pool/devices").json()}
    assert rows[d1.pk]["pending_count"] == 2
    assert rows[d2.pk]["pending_count"] == 1  # broadcasts reach validated devices only
    assert rows[d1.pk]["online"] is False
    assert set(rows[d1.pk]) == {
        "id",
        "name",
        "kind",
        "validated",
        "enabled",
        "created_at",
        "last_activity_at",
        "last_activity_type",
        "last_heartbeat_at",
        "online",
        "pending_count",
        "tags",
        "groups",
    }


def test_log_jsonl_and_json(device, master, admin, client_for):
    task = task_create(user=master, to=f"device:{device.pk}", title="t1")
    device_client(device).post("/pool/response", {"parent_id": task.msg_id, "status": "done"}, format="json")
    client = client_for(admin)
    response = client.get("/pool/log")
    assert response.status_code == 200 and response["Content-Type"].startswith("application/x-ndjson")
    lines = b"".join(response.streaming_content).decode().splitlines()
    assert len(lines) == 2
    import json

    first = json.loads(lines[0])
    assert first["id"] == task.msg_id and list(first) == [
        "id",
        "ts",
        "from",
        "to",
        "type",
        "title",
        "body",
        "parent_id",
        "meta",
    ]
    as_json = client.get("/pool/log", HTTP_ACCEPT="application/json")
    assert as_json["Content-Type"].startswith("application/json")
    assert [m["id"] for m in as_json.json()] == [json.loads(line)["id"] for line in lines]
    today = timezone.now().date()
    same_day = client.get(f"/pool/log?date={today.isoformat()}")
    assert b"".join(same_day.streaming_content).decode().splitlines() == lines
    empty = client.get("/pool/log?date=2001-01-01")
    assert b"".join(empty.streaming_content) == b"" and empty["Content-Type"].startswith("application/x-ndjson")
    for bad in ["2026-13-01", "yesterday", "2026-1-1", "2026-02-30", "0000-01-01", "9" * 40]:
        response = client.get(f"/pool/log?date={bad}", HTTP_ACCEPT="application/json")
        assert response.status_code == 400 and response.json()["code"] == "invalid_date", bad


def test_rs256_device_tokens_when_configured(settings, device, anon_client):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    settings.JWT_ALGORITHM = "RS256"
    settings.JWT_SIGNING_KEY = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    settings.JWT_VERIFYING_KEY = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    response = anon_client.post("/pool/token", {"device_id": device.pk, "secret": device.secret}, format="json")
    assert response.status_code == 200
    token = response.json()["token"]
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    assert _bearer(token).get("/pool/pending").status_code == 200
    # An HS256 token signed with the old shared key is no longer accepted.
    forged = jwt.encode(jwt.decode(token, options={"verify_signature": False}), settings.SECRET_KEY, algorithm="HS256")
    assert _bearer(forged).get("/pool/pending").status_code == 401


def test_a_device_list_nested_past_the_recursion_limit_is_a_400(client_for, master):
    from pool.models import Message

    nested = "device:[" + "[" * 1000 + "1" + "]" * 1000 + "]"
    answer = client_for(master).post("/pool/task", {"to": nested, "title": "x"}, format="json")
    assert answer.status_code == 400 and answer.json()["code"] == "invalid_target"
    assert not Message.objects.exists()


def test_issuing_a_new_secret_revokes_the_device_tokens(device):
    from pool.services import device_issue_secret

    old = device_client(device)
    assert old.get("/pool/pending").status_code == 200
    device_issue_secret(device=device)
    refused = old.get("/pool/pending")
    assert refused.status_code == 401 and "revoked" in refused.json()["message"]
    assert device_client(device).get("/pool/pending").status_code == 200  # a token issued after works
