"""The WebSocket `/ws/progress/`: subscribe to topics, receive the same events as the SSE stream.

Client messages: `{"type": "subscribe", "topics": [...], "since": <event id, optional>}` and
`{"type": "unsubscribe", "topics": [...]}`; the topic `*` means everything the reader may see.
Server messages: `{"type": "subscribed", "topics": [...]}`, `{"type": "event", "id", "topic",
"kind", "text", "state", "at"}` (a `"snapshot": true` event carries a topic's current state
right after subscribing) and `{"type": "error", "code", "message"}`.
Refusals: close code 4401 (no or bad credentials), 4403 (account not allowed), 4429 (the user
already holds PROGRESS_STREAMS_PER_USER open streams, counted across all processes). An open socket
closes with 4401 once its reader may no longer read, or its slot's lease lapsed and was taken.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any
from urllib.parse import parse_qs

from channels.generic.websocket import AsyncJsonWebsocketConsumer

from coordinator.api.parsers import loads_strict
from progress import conf, metrics
from progress.auth import Access, TooManyStreams, access_for, still_allowed, stream_slot_release, stream_slot_take
from progress.db import db_call
from progress.events import Event, ws_payload
from progress.hub import Subscriber, hub
from progress.selectors import Viewer, event_list_after, topic_state_events

MAX_TOPICS = 1000
MAX_TOPIC_LENGTH = 200


class ProgressConsumer(AsyncJsonWebsocketConsumer):
    viewer: Viewer | None = None
    topics: set[str]
    subscriber: Subscriber | None = None
    lease: int | None = None
    pump: asyncio.Task[None] | None = None
    watch: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        self.topics = set()
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        token = (query.get("token") or [""])[0]
        access = await access_for(session_user=self.scope.get("user"), token=token or None)
        await self.accept()
        if access.viewer is None:
            await self.close(code=4401 if access.status == 401 else 4403)
            return
        try:
            self.lease = await stream_slot_take(access)
        except TooManyStreams:
            await self.close(code=4429)  # this user holds as many open streams as one may
            return
        self.viewer = access.viewer
        subscriber = Subscriber(self._accepts, topics=self.topics)
        await hub().subscribe(subscriber)
        self.subscriber = subscriber
        metrics.clients.labels("websocket").inc()
        self.pump = asyncio.get_running_loop().create_task(self._forward(self.subscriber))
        self.watch = asyncio.get_running_loop().create_task(self._watch(access))

    async def _watch(self, access: Access) -> None:
        """Close the socket once its reader may no longer read (deactivated, password or role
        changed, token expired): 4401, as for a refused handshake. Renews the stream's slot."""
        while True:
            await asyncio.sleep(conf.keepalive_seconds())
            if not await still_allowed(access, self.lease):
                await self.close(code=4401)
                return

    def _accepts(self, event: Event) -> bool:
        viewer = self.viewer
        if viewer is None or not viewer.can_see(event):
            return False
        return "*" in self.topics or event["topic"] in self.topics

    async def _forward(self, subscriber: Subscriber) -> None:
        while True:
            get = asyncio.ensure_future(subscriber.queue.get())
            overflow = asyncio.ensure_future(subscriber.overflowed.wait())
            try:
                done, _ = await asyncio.wait({get, overflow}, return_when=asyncio.FIRST_COMPLETED)
            finally:  # a disconnect cancels this task mid-wait: its two waits must not be left pending
                for waiting in (get, overflow):
                    if not waiting.done():
                        waiting.cancel()
            if overflow in done:
                await self.close(code=4408)  # too slow a reader: reconnect and resubscribe
                return
            await self.send_json(ws_payload(get.result()))

    async def disconnect(self, code: int) -> None:
        if self.subscriber is not None:
            hub().unsubscribe(self.subscriber)
            metrics.clients.labels("websocket").dec()
        lease, self.lease = self.lease, None
        await stream_slot_release(lease)
        for task in (self.pump, self.watch):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    @classmethod
    async def decode_json(cls, text_data: str) -> Any:
        try:
            return loads_strict(text_data)
        except ValueError:
            return None  # answered with an error message below, never a crash

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if self.viewer is None:
            return
        if not isinstance(content, dict) or content.get("type") not in ("subscribe", "unsubscribe"):
            await self._error("bad_request", 'Send {"type": "subscribe"|"unsubscribe", "topics": [...]}.')
            return
        topics = content.get("topics")
        if (
            not isinstance(topics, list)
            or len(topics) > MAX_TOPICS
            or not all(isinstance(t, str) and 0 < len(t) <= MAX_TOPIC_LENGTH for t in topics)
        ):
            await self._error("bad_request", f"`topics` must be a list of at most {MAX_TOPICS} non-empty strings.")
            return
        if content["type"] == "unsubscribe":
            self.topics.difference_update(topics)
            await self.send_json({"type": "subscribed", "topics": sorted(self.topics)})
            return
        since = content.get("since")
        if since is not None and (not isinstance(since, int) or isinstance(since, bool) or not 0 <= since < 2**63):
            await self._error("bad_request", "`since` must be a non-negative event id.")
            return
        added = [t for t in topics if t not in self.topics]
        self.topics.update(topics)
        await self.send_json({"type": "subscribed", "topics": sorted(self.topics)})
        if added:
            await self._send_current(added, since)

    async def _send_current(self, topics: list[str], since: int | None) -> None:
        viewer = self.viewer
        assert viewer is not None
        if since is not None:
            events = await db_call(event_list_after)(viewer=viewer, after_id=since, topics=topics)
            for event in events:
                await self.send_json(ws_payload(event))
            return
        if "*" in topics:
            topics = ["*"]
        for event in await db_call(topic_state_events)(viewer=viewer, topics=topics):
            await self.send_json(ws_payload(event, snapshot=True))

    async def _error(self, code: str, message: str) -> None:
        await self.send_json({"type": "error", "code": code, "message": message})
