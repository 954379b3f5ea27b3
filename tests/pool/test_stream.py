"""`GET /pool/events`: a device's push stream through the real ASGI application."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from channels.testing import ApplicationCommunicator

from coordinator.asgi import application
from pool.models import Device
from pool.rollouts import rollout_step
from pool.services import device_issue_secret, device_set_flags, task_create
from pool.tokens import device_token_encode
from tests.conftest import access_token_for
from tests.progress.conftest import SseClient, parse_sse, run

pytestmark = pytest.mark.django_db(transaction=True)


class DeviceStream(SseClient):
    def __init__(self, token: str, headers: dict[str, str] | None = None) -> None:
        super().__init__("", {"Authorization": f"Bearer {token}", **(headers or {})})
        scope = {**self.communicator.scope, "path": "/pool/events", "raw_path": b"/pool/events"}
        self.communicator = ApplicationCommunicator(application, scope)


def pending_ids(text: str) -> list[int]:
    return [int(f["id"]) for f in parse_sse(text) if f.get("event") == "pending"]


async def read_pending(stream: DeviceStream, count: int) -> str:
    """The stream's text once it holds `count` pending events."""
    while stream.buffer.count("event: pending") < count:
        message = await stream.communicator.receive_output(timeout=5)
        if message["type"] == "http.response.body":
            stream.buffer += message.get("body", b"").decode()
    return stream.buffer


def test_a_rollout_release_reaches_the_right_device_only(make_device, master) -> None:
    a, b = make_device("a"), make_device("b")
    task = task_create(user=master, to=f"device:[{a.pk},{b.pk}]", meta={"rollout": {"per_minute": 1}})
    token_a, token_b = device_token_encode(device_id=a.pk)[0], device_token_encode(device_id=b.pk)[0]

    async def body() -> tuple[str, str]:
        first, second = DeviceStream(token_a), DeviceStream(token_b)
        for stream in (first, second):
            await stream.open()
            assert stream.status == 200 and stream.headers["content-type"] == "text/event-stream"
            await stream.read_until("\nid: ")
        await sync_to_async(rollout_step)(task_id=task.pk)  # releases the first delivery: device a
        text = await first.read_until("event: pending")
        # then a task for b alone: b's first event is that one, not a's release
        await sync_to_async(task_create)(user=master, to=f"device:{b.pk}")
        await second.read_until("event: pending")
        await first.close()
        await second.close()
        return text, second.buffer

    text_a, text_b = run(body)
    [release] = pending_ids(text_a)
    [for_b] = pending_ids(text_b)
    assert for_b > release


def test_direct_tasks_and_broadcasts_wake_devices_and_last_event_id_replays(make_device, master) -> None:
    a, other = make_device("a"), make_device("other")
    task_create(user=master, to=f"device:{other.pk}")  # the stream's `id:` mark is then a stored event
    token = device_token_encode(device_id=a.pk)[0]

    async def body() -> list[int]:
        stream = DeviceStream(token)
        await stream.open()
        start = await stream.read_until("\nid: ")
        await sync_to_async(task_create)(user=master, to=f"device:{a.pk}")
        await stream.read_until("event: pending")
        await stream.close()
        mark = int([f for f in parse_sse(start) if "id" in f][-1]["id"])
        # while away: a broadcast and a task to the device; a reconnect from the mark replays both
        await sync_to_async(task_create)(user=master, to="device:*")
        await sync_to_async(task_create)(user=master, to=f"device:[{a.pk}]")
        again = DeviceStream(token, {"Last-Event-ID": str(mark)})
        await again.open()
        text = await read_pending(again, 3)
        await again.close()
        return pending_ids(text)

    replayed = run(body)
    # the direct task seen live, then the broadcast and the list task sent while away
    assert len(replayed) == 3 and replayed == sorted(replayed)


@pytest.mark.parametrize("change", ["secret replaced", "disabled"])
def test_the_stream_ends_when_the_token_is_revoked_or_the_device_disabled(make_device, monkeypatch, change) -> None:
    monkeypatch.setattr("progress.conf.KEEPALIVE_SECONDS", 0.05)
    a = make_device("a")
    token = device_token_encode(device_id=a.pk)[0]

    def revoke() -> None:
        if change == "disabled":
            device_set_flags(devices=[a], enabled=False)
        else:
            device_issue_secret(device=Device.objects.get(pk=a.pk))

    async def body() -> str:
        stream = DeviceStream(token)
        await stream.open()
        await stream.read_until(": keep-alive\n\n")
        await sync_to_async(revoke)()
        return await asyncio.wait_for(stream.read_all(), timeout=20)  # a bound for a stream that never ends

    assert run(body).endswith(": keep-alive\n\n")  # it ended by itself
    # and the token opens no new stream
    status = run(_status_for(token))
    assert status in (401, 403)


def _status_for(token: str, headers: dict[str, str] | None = None):
    async def body() -> int:
        stream = DeviceStream(token, headers)
        await stream.open()
        status = stream.status
        await stream.read_all()
        return status

    return body


def test_who_may_open_a_stream(make_device, user) -> None:
    a = make_device("a")
    off = make_device("off", enabled=False)
    token, off_token, user_token = (
        device_token_encode(device_id=a.pk)[0],
        device_token_encode(device_id=off.pk)[0],
        access_token_for(user),
    )
    assert run(_status_for(user_token)) == 401  # a user's token is not a device token
    assert run(_status_for("not-a-token")) == 401
    assert run(_status_for(off_token)) == 403
    assert run(_status_for(token, {"Last-Event-ID": "x"})) == 400
    # without Accept: text/event-stream the answer is the beginning only
    assert run(_status_for(token, {"Accept": "application/json"})) == 200
