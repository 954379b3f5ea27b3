"""The SSE loop for streams other apps serve (e.g. the pool's `/pool/events`): the same hub,
subscriber queue, coalescing, keep-alives and periodic "may this reader still read" check as
`/progress/events`, with the app's own filter, beginning and permission check."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from progress import conf
from progress.events import Event, sse_frame
from progress.hub import Subscriber, TooManyStreams, hub
from progress.views import COALESCE_SECONDS, BadParameter
from progress.views import _last_event_id as last_event_id

__all__ = [
    "BadParameter",
    "Beginning",
    "last_event_id",
    "sse_stream",
]  # the request's Last-Event-ID, parsed once for every stream

# The frames sent first, the ids among them, and the id up to which they cover the past.
Beginning = tuple[list[str], set[int], int]


async def sse_stream(
    *,
    accepts: Callable[[Event], bool],
    beginning: Callable[[], Awaitable[Beginning]],
    still_allowed: Callable[[], Awaitable[bool]],
    frame: Callable[[Event], str] | None = None,
    keepalive: float | None = None,
) -> AsyncIterator[str]:
    """Subscribe (before reading the beginning: nothing falls in between), send the beginning, then
    live events with their ids and `: keep-alive` comments; end once `still_allowed` says no or the
    reader is too slow (it reconnects with Last-Event-ID and is replayed)."""
    render = frame or (lambda e: sse_frame(e["kind"], e["topic"], e["text"], e["id"]))
    subscriber = Subscriber(accepts)
    try:
        await hub().subscribe(subscriber)
    except TooManyStreams:
        return
    try:
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
