"""Credential endpoints under attack: guessing passwords from one address, or at one account from
many, ends in 429 with Retry-After in each endpoint's dialect, before any more passwords are hashed.

Each test names its own client address and accounts: the counters live in the shared cache (Redis
in CI's second run), which outlives a test's database rollback.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from typing import Any

import pytest
import requests
from django.test import Client
from rest_framework.test import APIClient

from coordinator.models import User
from tests.factories import UserFactory
from tests.live import run_wsgi_server

pytestmark = pytest.mark.django_db

LIMITED = {"credentials_per_address": "5/min", "credentials_per_account": "100000/min"}
PER_ACCOUNT = {"credentials_per_address": "100000/min", "credentials_per_account": "3/min"}


def an_address() -> str:
    return f"10.{secrets.randbelow(256)}.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"


def an_email() -> str:
    return f"victim-{uuid.uuid4().hex[:12]}@example.com"


def test_password_guessing_from_one_address_is_cut_off_at_the_token_endpoint(settings: Any) -> None:
    settings.CREDENTIAL_RATES = LIMITED
    client, address = APIClient(), an_address()
    answers = [
        client.post("/auth/token/", {"email": an_email(), "password": "guess"}, format="json", REMOTE_ADDR=address)
        for _ in range(7)
    ]
    assert [a.status_code for a in answers] == [401] * 5 + [429] * 2
    refused = answers[-1]
    assert int(refused["Retry-After"]) >= 1
    assert set(refused.json()) == {"code", "message", "extra"} and refused.json()["code"] == "throttled"
    # Another address is not affected.
    other = client.post("/auth/token/", {"email": an_email(), "password": "x"}, format="json", REMOTE_ADDR=an_address())
    assert other.status_code == 401


def test_guessing_one_accounts_password_from_many_addresses_is_cut_off(settings: Any) -> None:
    settings.CREDENTIAL_RATES = PER_ACCOUNT
    victim = UserFactory(email=an_email())
    client = APIClient()
    codes = [
        client.post(
            "/auth/token/", {"email": victim.email, "password": "guess"}, format="json", REMOTE_ADDR=an_address()
        ).status_code
        for _ in range(5)
    ]
    assert codes == [401, 401, 401, 429, 429]


def test_pytasks_token_endpoint_answers_its_own_dialect_when_throttled(settings: Any) -> None:
    settings.CREDENTIAL_RATES = LIMITED
    client, address = APIClient(), an_address()
    codes = []
    for _ in range(6):
        answer = client.post("/token", {"user": an_email(), "password": "guess"}, format="json", REMOTE_ADDR=address)
        codes.append(answer.status_code)
    assert codes == [401] * 5 + [429]
    assert set(answer.json()) == {"message"} and int(answer["Retry-After"]) >= 1


def test_device_token_and_enrolment_are_throttled(settings: Any) -> None:
    settings.CREDENTIAL_RATES = LIMITED
    client, address = APIClient(), an_address()
    tokens = [
        client.post("/pool/token", {"device_id": 1, "secret": "guess"}, format="json", REMOTE_ADDR=address)
        for _ in range(6)
    ]
    assert tokens[-1].status_code == 429 and tokens[-1].json()["code"] == "throttled"
    enrol_from = an_address()
    enrolled = [
        client.post("/pool/register", {"name": f"d{n}"}, format="json", REMOTE_ADDR=enrol_from).status_code
        for n in range(6)
    ]
    assert enrolled == [201] * 5 + [429]


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def test_farm_basic_password_guessing_is_throttled(settings: Any) -> None:
    settings.CREDENTIAL_RATES = LIMITED
    client, address = APIClient(), an_address()
    codes = [
        client.get("/api/runs", HTTP_AUTHORIZATION=basic(an_email(), "guess"), REMOTE_ADDR=address).status_code
        for _ in range(6)
    ]
    assert codes == [401] * 5 + [429]


def test_a_malformed_farm_token_is_refused_before_any_password_hash(monkeypatch: Any) -> None:
    def no_hashing(self: User, raw_password: str | None) -> bool:
        raise AssertionError("a password was hashed")

    monkeypatch.setattr(User, "check_password", no_hashing)
    client = APIClient()
    for username in ("not.a.token", "eyJhbGciOiJIUzI1NiJ9.e30.bad", "plain", "x" * 5000):
        answer = client.get("/api/runs", HTTP_AUTHORIZATION=basic(username, "any"))
        assert answer.status_code == 401 and answer["WWW-Authenticate"].startswith("Basic")


def test_admin_sign_in_is_throttled(settings: Any) -> None:
    settings.CREDENTIAL_RATES = LIMITED
    client, address = Client(), an_address()
    codes = [
        client.post("/admin/login/", {"username": an_email(), "password": "guess"}, REMOTE_ADDR=address).status_code
        for _ in range(6)
    ]
    assert codes == [200] * 5 + [429]  # the form again with its error, then the refusal


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_limit_holds_across_web_processes(transactional_db: None) -> None:
    """Two server processes count in the shared cache: a per-account limit of 3 lets 3 attempts
    through in all, not 3 per process."""
    victim = UserFactory(email=an_email())
    with run_wsgi_server(workers=2, CREDENTIAL_RATE_PER_ACCOUNT="3/min") as live:
        codes = [
            requests.post(
                f"{live}/auth/token/",
                json={"email": victim.email, "password": "guess"},
                headers={"Connection": "close"},  # a new connection each time, to either process
                timeout=30,
            ).status_code
            for _ in range(8)
        ]
    assert codes.count(401) == 3 and codes.count(429) == 5, codes


def test_a_client_cannot_dodge_the_address_limit_with_its_own_forwarded_for(settings: Any) -> None:
    """Behind the front door (one proxy), the address counted is the one the proxy appended: a
    client writing a new X-Forwarded-For entry on each attempt is still one address."""
    settings.CREDENTIAL_RATES = LIMITED
    client, real = APIClient(), an_address()
    codes = [
        client.post(
            "/auth/token/",
            {"email": an_email(), "password": "guess"},
            format="json",
            REMOTE_ADDR="127.0.0.1",
            HTTP_X_FORWARDED_FOR=f"{an_address()}, {real}",
        ).status_code
        for _ in range(6)
    ]
    assert codes == [401] * 5 + [429]


def test_anonymous_job_submissions_are_throttled_per_address(settings: Any) -> None:
    from jobs.models import Job

    settings.ANONYMOUS_JOB_RATE = "3/min"
    client, address = APIClient(), an_address()
    body = {"type": "test.main.add", "args": {"x": 1, "y": 2}}
    codes = [client.post("/task", body, format="json", REMOTE_ADDR=address).status_code for _ in range(5)]
    assert codes[3:] == [429, 429] and 429 not in codes[:3]
    assert Job.objects.count() == codes.count(200) + codes.count(201)


def test_exports_need_a_signed_in_user(settings: Any) -> None:
    """Anonymous exports would each hold every anonymous job, in files nobody can download."""
    from jobs.models import Job

    answer = APIClient().post("/task", {"type": "csv_export", "args": {}}, format="json")
    assert answer.status_code == 401 and set(answer.json()) == {"message"}
    assert not Job.objects.exists()


def test_a_pytasks_token_request_that_is_not_json_keeps_pytasks_own_answer() -> None:
    answer = APIClient().post("/token", b"{not json", content_type="application/json", REMOTE_ADDR=an_address())
    assert answer.status_code == 400 and set(answer.json()) == {"errors", "message"}
