"""Hostile JSON that Python's json module accepts but nothing downstream can hold: each is a 400 in
the endpoint's dialect, with nothing stored (issue 15, section 4)."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from coordinator.models import User

pytestmark = pytest.mark.django_db

HOSTILE = {
    "nested 1000 deep": b"[" * 1000 + b"]" * 1000,
    "nested objects": b'{"a":' * 1000 + b"1" + b"}" * 1000,
    "NaN": b'{"email": "a@example.com", "password": NaN}',
    "1e999": b'{"email": "a@example.com", "password": 1e999}',
    "lone surrogate": b'{"email": "\\ud800@example.com", "password": "x"}',
}


@pytest.mark.parametrize("payload", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_json_is_a_400_envelope(anon_client: APIClient, payload: bytes) -> None:
    answer = anon_client.post("/auth/token/", payload, content_type="application/json")
    assert answer.status_code == 400
    assert answer.json()["code"] == "parse_error"


@pytest.mark.parametrize("payload", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_json_is_a_400_in_the_pytasks_dialect(anon_client: APIClient, payload: bytes) -> None:
    from jobs.models import Job

    answer = anon_client.post("/task", payload, content_type="application/json")
    assert answer.status_code == 400 and "message" in answer.json()
    assert not Job.objects.exists()


def test_hostile_json_to_the_farm_stores_nothing(user: User, client_for) -> None:
    from farm.models import Run

    for payload in HOSTILE.values():
        answer = client_for(user).post("/api/run", payload, content_type="application/json")
        assert answer.status_code == 400
    assert not Run.objects.exists()
