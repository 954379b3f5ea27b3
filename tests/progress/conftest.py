from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator

from coordinator.asgi import application
from progress.services import events_store


def publish(topic: str, kind: str, text: str = "", state: dict[str, Any] | None = None,
            owner_id: int | None = None) -> int:
    """Store one event the way `progress_publish` does after commit; returns its id."""
    [event] = events_store([{"topic": topic, "kind": kind, "text": text, "state": state or {}, "owner_id": owner_id}])
    return event["id"]


def run(coro_fn: Callable[[], Awaitable[Any]]) -> Any:
    """Run an async test body from a sync test (DB access goes back to the test's thread)."""
    from asgiref.sync import async_to_sync

    return async_to_sync(coro_fn)()


async def ws_connect(path: str = "/ws/progress/", headers: list[tuple[bytes, bytes]] | None = None
                     ) -> tuple[WebsocketCommunicator, bool, int | None]:
    communicator = WebsocketCommunicator(application, path, headers=[(b"origin", b"http://127.0.0.1"), *(headers or [])])
    connected, code = await communicator.connect()
    return communicator, connected, code


async def ws_receive_until(communicator: WebsocketCommunicator, predicate: Callable[[dict[str, Any]], bool],
                           timeout: float = 5.0) -> list[dict[str, Any]]:
    """Messages received until (and including) the first one matching `predicate`."""
    seen: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise AssertionError(f"no matching message within {timeout}s; got {seen}")
        message = json.loads(await communicator.receive_from(timeout=remaining))
        seen.append(message)
        if predicate(message):
            return seen


@pytest.fixture(autouse=True)
def _fast_polling(settings: Any) -> None:
    settings.PROGRESS_POLL_INTERVAL = 0.02
