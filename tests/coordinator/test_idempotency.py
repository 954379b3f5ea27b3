"""`Idempotency-Key` on the creating endpoints (coordinator/api/idempotency.py): a retried request
gets the first answer and creates nothing, in every dialect."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta
from typing import Any

import pytest
import requests
from rest_framework.test import APIClient

from coordinator.models import IdempotentAnswer
from jobs.models import Job
from pool.models import Message
from pool.services import device_create
from tests.conftest import access_token_for
from tests.pool.conftest import device_client

pytestmark = pytest.mark.django_db


def post(client: APIClient, path: str, body: Any, key: str | None) -> Any:
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key is not None else {}
    return client.post(path, body, format="json", **headers)


def new_device(name: str) -> Any:
    device, _ = device_create(name=name, kind="sensor", validated=True)
    return device


@pytest.fixture
def endpoints(master: Any, user: Any, client_for: Any) -> dict[str, tuple[APIClient, dict[str, Any]]]:
    from pool.services import task_create

    device = new_device("retrying")
    task = task_create(user=master, to=f"device:{device.pk}", title="t")
    return {
        "/pool/task": (client_for(master), {"to": "device:*", "title": "reboot"}),
        "/pool/heartbeat": (device_client(device), {"body": "alive"}),
        "/pool/response": (device_client(device), {"parent_id": task.msg_id, "status": "progress"}),
        "/v1/tasks": (client_for(user), {"type": "test.main.add", "data": {"x": 1, "y": 2}}),
        "/task": (APIClient(), {"type": "test.main.add", "args": {"x": 1, "y": 2}}),
    }


def created_count() -> int:
    return Message.objects.count() + Job.objects.count()


@pytest.mark.parametrize("path", ["/pool/task", "/pool/heartbeat", "/pool/response", "/v1/tasks", "/task"])
def test_a_retry_with_the_same_key_gets_the_first_answer_and_creates_nothing(endpoints: Any, path: str) -> None:
    client, body = endpoints[path]
    key = str(uuid.uuid4())
    first = post(client, path, body, key)
    assert 200 <= first.status_code < 300, first.content
    after_first = created_count()
    for _ in range(3):
        retry = post(client, path, body, key)
        assert (retry.status_code, retry.content) == (first.status_code, first.content)
        assert retry["Idempotent-Replayed"] == "true"
    assert created_count() == after_first
    # Without a key, or with another one, the same body creates again (the key is what says "retry").
    assert 200 <= post(client, path, body, str(uuid.uuid4())).status_code < 300
    assert 200 <= post(client, path, body, None).status_code < 300
    assert created_count() > after_first


@pytest.mark.parametrize(
    ("path", "shape"),
    [("/pool/task", "code"), ("/v1/tasks", "message"), ("/task", "message")],
)
def test_the_same_key_with_another_body_is_refused_in_the_dialect(endpoints: Any, path: str, shape: str) -> None:
    client, body = endpoints[path]
    key = str(uuid.uuid4())
    assert 200 <= post(client, path, body, key).status_code < 300
    before = created_count()
    changed = {**body, "title": "something else"} if path == "/pool/task" else {**body, "type": "csv_export"}
    refused = post(client, path, changed, key)
    assert refused.status_code == 422, refused.content
    assert shape in refused.json() and "Idempotency-Key" in str(refused.json())
    assert created_count() == before


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9", "a\tb"])
def test_a_malformed_key_is_a_clear_400(endpoints: Any, key: str) -> None:
    client, body = endpoints["/pool/task"]
    before = created_count()
    refused = client.post("/pool/task", body, format="json", HTTP_IDEMPOTENCY_KEY=key)
    assert refused.status_code == 400 and refused.json()["code"] == "idempotency_key_invalid"
    assert created_count() == before


def test_a_key_is_scoped_to_who_asked() -> None:
    """Another device sending the same key gets its own answer: keys never reveal another's."""
    first, second = device_client(new_device("one")), device_client(new_device("two"))
    a = post(first, "/pool/heartbeat", {"body": "alive"}, "shared-key")
    b = post(second, "/pool/heartbeat", {"body": "alive"}, "shared-key")
    assert a.status_code == b.status_code == 201
    assert a.json()["id"] != b.json()["id"] and "Idempotent-Replayed" not in b


def test_a_refused_request_keeps_its_key_free_for_the_corrected_one(endpoints: Any) -> None:
    client, body = endpoints["/pool/task"]
    key = str(uuid.uuid4())
    assert post(client, "/pool/task", {"title": "t"}, key).status_code == 400  # no `to`
    assert post(client, "/pool/task", body, key).status_code == 201


def test_a_key_is_forgotten_after_24_hours(endpoints: Any) -> None:
    client, body = endpoints["/pool/task"]
    key = str(uuid.uuid4())
    first = post(client, "/pool/task", body, key)
    IdempotentAnswer.objects.update(created_at=IdempotentAnswer.objects.get().created_at - timedelta(hours=25))
    again = post(client, "/pool/task", body, key)
    assert again.status_code == 201 and again.json()["id"] != first.json()["id"]
    assert IdempotentAnswer.objects.count() == 1  # the expired answer was dropped


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_concurrent_retries_with_one_key_create_one_task(live_server_url: str, master: Any) -> None:
    """A client that times out and retries while its first request still runs (real processes:
    granian with 2 workers): 8 requests with one key at once create one task, and all 8 answers
    are that task's."""
    headers = {"Authorization": f"Bearer {access_token_for(master)}", "Idempotency-Key": str(uuid.uuid4())}
    answers: list[requests.Response] = []
    start = threading.Barrier(8)

    def send() -> None:
        start.wait()
        answers.append(
            requests.post(f"{live_server_url}/pool/task", json={"to": "device:*", "title": "once"}, headers=headers)
        )

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted({answer.status_code for answer in answers}) == [201], [a.content for a in answers]
    assert len({answer.json()["id"] for answer in answers}) == 1
    assert Message.objects.filter(title="once").count() == 1
