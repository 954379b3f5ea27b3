"""The one SSE loop, for `/progress/events` and for streams other apps serve (the pool's
`/pool/events`): the hub, the subscriber queue, coalescing, keep-alives, the periodic "may this
reader still read" check and the open-readers gauge, with each stream's own filter, beginning and
permission check."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from django.http import HttpRequest
from drf_spectacular.utils import OpenApiResponse

from coordinator.api.views import ErrorEnvelopeSerializer
from progress import conf, metrics
from progress.events import Event, sse_frame
from progress.hub import Subscriber, hub

# Under load, one write per COALESCE_SECONDS carries many frames: each write costs a trip through
# Django's and daphne's response machinery, per client.
COALESCE_SECONDS = 0.02

# The frames sent first, the ids among them, and the id up to which they cover the past.
Beginning = tuple[list[str], set[int], int]


class BadParameter(ValueError):
    pass


def last_event_id(request: HttpRequest) -> int | None:
    """The id the reader saw last (`Last-Event-ID`, or `lastEventId` in the query), if any."""
    raw = request.headers.get("Last-Event-ID", request.GET.get("lastEventId", "")).strip()
    if raw == "":
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise BadParameter("`Last-Event-ID` must be an event id (a non-negative integer).")
    return int(raw)


async def sse_stream(
    *,
    accepts: Callable[[Event], bool],
    beginning: Callable[[], Awaitable[Beginning]],
    still_allowed: Callable[[], Awaitable[bool]],
    frame: Callable[[Event], str] | None = None,
    keepalive: float | None = None,
    only_topics: frozenset[str] | None = None,
) -> AsyncIterator[str]:
    """Subscribe (before reading the beginning: nothing falls in between), send the beginning, then
    live events with their ids and `: keep-alive` comments; end once `still_allowed` says no (the
    reader was deactivated, its token expired or was revoked, its slot lapsed) or the reader is too
    slow (it reconnects with Last-Event-ID and is replayed)."""
    render = frame or (lambda e: sse_frame(e["kind"], e["topic"], e["text"], e["id"]))
    # `only_topics`: the reader wants those topics' events and no others (the hub offers it no more).
    if only_topics is None:
        subscriber = Subscriber(accepts)
    else:
        subscriber = Subscriber(accepts, topics=only_topics, confined=True)
    metrics.clients.labels("sse").inc()
    try:
        await hub().subscribe(subscriber)
        first, replayed, covered = await beginning()
        for text in first:
            yield text
        every = keepalive if keepalive is not None else conf.keepalive_seconds()
        checked = time.monotonic()
        while not subscriber.overflowed.is_set():
            if time.monotonic() - checked >= every:
                if not await still_allowed():
                    return
                checked = time.monotonic()
            try:
                event = await asyncio.wait_for(subscriber.queue.get(), timeout=every)
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            await asyncio.sleep(COALESCE_SECONDS)
            batch = [event]
            while len(batch) < 2000 and not subscriber.queue.empty():
                batch.append(subscriber.queue.get_nowait())
            out = [render(e) for e in batch if e["id"] > covered and e["id"] not in replayed]
            if out:
                yield "".join(out)
    finally:
        hub().unsubscribe(subscriber)
        metrics.clients.labels("sse").dec()


def sse_responses(*, events: list[str], data: str) -> dict[Any, Any]:
    """The OpenAPI answers of an SSE view: the event stream (its schema describes one event, as
    schemathesis and OpenAPI 3.2 read event-stream schemas) or the error envelope."""
    return {
        (200, "text/event-stream"): OpenApiResponse(
            {
                "type": "object",
                "properties": {
                    "event": {"type": "string", "enum": events},
                    "data": {"type": "string", "description": data},
                    "id": {"type": "string"},
                    "retry": {"type": "integer"},
                },
            },
            description="The event stream: one object per event.",
        ),
        (400, "application/json"): ErrorEnvelopeSerializer,
        (401, "application/json"): ErrorEnvelopeSerializer,
        (403, "application/json"): ErrorEnvelopeSerializer,
    }
