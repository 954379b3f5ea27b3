"""Authentication and throttles come before a large body is read: the front door asks first
(coordinator/admission.py), and a refused client gets its answer while its body is still unsent."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from coordinator.serving.proxy import MULTIPART_FRAMING
from tests.conftest import access_token_for
from tests.coordinator.test_serve import start_serve, stop_and_read
from tests.live import free_port, wait_for_http

DECLARED = 50 * 1024 * 1024  # far more than the client ever sends


def _answer_while_body_unsent(
    port: int, path: str, headers: str = "", content_type: str = "application/json"
) -> tuple[int, Any]:
    """Send a head declaring DECLARED bytes and only 1 KiB of them, then read the answer: it can only
    come if the server answered without waiting for the body."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(
            (
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {DECLARED}\r\n{headers}\r\n"
            ).encode()
            + b"x" * 1024
        )
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < _length(answer):
            chunk = conn.recv(65536)
            if not chunk:
                break
            answer += chunk
    return _status_and_body(answer)


def _length(answer: bytes) -> int:
    for line in answer.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 1 << 30


def _status_and_body(answer: bytes) -> tuple[int, Any]:
    head, _, body = answer.partition(b"\r\n\r\n")
    try:
        return int(head.split(b" ")[1]), json.loads(body)
    except ValueError:
        return int(head.split(b" ")[1]), body.decode()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_refused_clients_are_answered_before_their_large_body_is_read(tmp_path: Path, user: Any) -> None:
    import requests
    from django.core.cache import cache

    # The served platform shares this run's cache: earlier tests' sign-ins from 127.0.0.1 must not
    # count against the one attempt a minute this test allows.
    cache.clear()

    port = free_port()
    proc = start_serve(tmp_path, port, ANONYMOUS_JOB_RATE="1/min", CREDENTIAL_RATE_PER_ADDRESS="1/min")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/healthz", timeout=90)
        # Anonymous, to an endpoint anyone may call, with a body larger than Django reads (but within
        # the upload limit): 413 at once, not 50 MB buffered first only to be refused.
        status, body = _answer_while_body_unsent(port, "/auth/token/")
        assert (status, body["code"]) == (413, "body_too_large")
        # Not even as multipart: only a signed-in caller sends files.
        status, body = _answer_while_body_unsent(port, "/pool/register", content_type="multipart/form-data; boundary=b")
        assert (status, body["code"]) == (413, "body_too_large")
        # Anonymous, to an endpoint that needs a user: BookLogr's 401, body unread.
        status, body = _answer_while_body_unsent(port, "/v1/files", content_type="multipart/form-data; boundary=b")
        assert (status, body) == (401, {"msg": "Missing Authorization Header"})
        # A wrong token: 401 too (the pytasks dialect's protected endpoint).
        status, _ = _answer_while_body_unsent(port, "/v1/tasks", headers="Authorization: Bearer not-a-token\r\n")
        assert status == 401
        # Throttled anonymous job submissions: the first counts, the large second is refused unread.
        requests.post(f"{base}/task", json={"type": "add", "args": [1, 2]}, timeout=30)
        status, _ = _answer_while_body_unsent(port, "/task")
        assert status == 429
        # Throttled credential attempts: the same.
        requests.post(f"{base}/auth/token/", json={"email": "x@example.com", "password": "x"}, timeout=30)
        status, body = _answer_while_body_unsent(port, "/auth/token/")
        assert status == 429 and body["code"] == "throttled"
        # A page (the admin) takes no large body from anyone but signed-in staff: Django's CSRF check
        # would read it before the admin asks for a sign-in.
        status, _ = _answer_while_body_unsent(
            port, "/admin/pool/device/", content_type="application/x-www-form-urlencoded"
        )
        assert status == 403
        # A signed-in user who may not import: the upload's 403 comes before any of it is read.
        token = access_token_for(user)
        status, body = _answer_while_body_unsent(
            port,
            "/v1/files",
            headers=f"Authorization: Bearer {token}\r\n",
            content_type="multipart/form-data; boundary=b",
        )
        assert (status, body) == (
            403,
            {"error": "Forbidden", "message": "You don't have permission to import into the task pool."},
        )
        # A signed-in user's large body is admitted, read and served as before.
        answer = requests.post(
            f"{base}/v1/tasks",
            json={"type": "no_such_type", "data": {"pad": "x" * 200_000}},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert answer.status_code == 422  # the view read the body: it names the unknown type
    finally:
        log = stop_and_read(proc, tmp_path)
    assert "Traceback" not in log


def test_the_admission_question_runs_the_views_authentication_without_a_body(
    client: Any, user: Any, master: Any, settings: Any
) -> None:
    asked = {"HTTP_X_COORDINATOR_ADMISSION": "POST"}
    refused = client.generic("ADMIT", "/v1/files", **asked)
    assert refused.status_code == 401 and refused.json() == {"msg": "Missing Authorization Header"}
    not_allowed = client.generic("ADMIT", "/v1/files", HTTP_AUTHORIZATION=f"Bearer {access_token_for(user)}", **asked)
    assert not_allowed.status_code == 403  # a user may not import: refused before the upload is read
    granted = client.generic(
        "ADMIT",
        "/v1/files",
        HTTP_AUTHORIZATION=f"Bearer {access_token_for(master)}",
        CONTENT_TYPE="multipart/form-data; boundary=b",
        **asked,
    )
    assert granted.status_code == 204 and granted["X-Coordinator-Admission"] == "granted"
    # the grant names the largest body: an upload's from a signed-in caller, else what Django reads
    assert int(granted["X-Coordinator-Body-Limit"]) == settings.JOBS_UPLOAD_MAX_BYTES + MULTIPART_FRAMING
    anonymous = client.generic("ADMIT", "/auth/token/", CONTENT_TYPE="multipart/form-data; boundary=b", **asked)
    assert int(anonymous["X-Coordinator-Body-Limit"]) == settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    assert client.generic("ADMIT", "/v1/files", HTTP_X_COORDINATOR_ADMISSION="GET").status_code == 400
    assert client.generic("ADMIT", "/no/such/path", **asked).status_code == 404


def test_the_admission_question_grants_admin_pages_to_signed_in_staff_only(client: Any, admin: Any, user: Any) -> None:
    asked = {"HTTP_X_COORDINATOR_ADMISSION": "POST"}
    assert client.generic("ADMIT", "/admin/pool/device/", **asked).status_code == 403
    client.force_login(user)
    assert client.generic("ADMIT", "/admin/pool/device/", **asked).status_code == 403
    client.force_login(admin)
    assert client.generic("ADMIT", "/admin/pool/device/", **asked).status_code == 204


def test_the_admission_question_looks_at_throttles_without_counting(client: Any, settings: Any, db: None) -> None:
    settings.CREDENTIAL_RATES = {"credentials_per_address": "1/min", "credentials_per_account": "100/min"}
    from django.core.cache import cache

    cache.clear()
    for _ in range(3):  # asked again and again, it never spends the one attempt
        answer = client.generic("ADMIT", "/auth/token/", HTTP_X_COORDINATOR_ADMISSION="POST")
        assert answer.status_code == 204
    assert (
        client.post("/auth/token/", {"email": "a@example.com", "password": "x"}, "application/json").status_code == 401
    )
    refused = client.generic("ADMIT", "/auth/token/", HTTP_X_COORDINATOR_ADMISSION="POST")
    assert refused.status_code == 429 and refused.json()["code"] == "throttled" and refused["Retry-After"]


def test_a_password_checked_by_an_admission_question_counts_against_the_limit(
    client: Any, settings: Any, user: Any
) -> None:
    """Anyone may send the question (behind nginx, too): if it checked farm Basic passwords without
    counting them, it would be a password oracle outside the credential limits."""
    import base64

    from django.core.cache import cache

    settings.CREDENTIAL_RATES = {"credentials_per_address": "100/min", "credentials_per_account": "2/min"}
    cache.clear()
    guess = "Basic " + base64.b64encode(f"{user.email}:wrong".encode()).decode()
    asked = {"HTTP_X_COORDINATOR_ADMISSION": "POST", "HTTP_AUTHORIZATION": guess}
    answers = [client.generic("ADMIT", "/api/run", **asked).status_code for _ in range(3)]
    assert answers == [401, 401, 429]
    assert client.post("/api/run", {}, "application/json", HTTP_AUTHORIZATION=guess).status_code == 429
