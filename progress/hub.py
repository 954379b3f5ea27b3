"""Per-process fan-out: one task per ASGI event loop receives every event and hands it to the
local SSE and WebSocket subscribers whose filter accepts it.

Transports (`PROGRESS_TRANSPORT`, default `auto`):
- `layer` (chosen when the channel layer is channels-redis): the hub joins one channel-layer
  group and receives the batches publishers send after storing them. The event table stays the
  record: every RECONCILE_SECONDS the hub also reads the ids above the last one it reconciled, so
  an event whose broadcast was lost (Redis down or restarting while it was published) still
  reaches its readers, late. Each event is handed out once per hub, by whichever path brings it
  first (ids handed out are remembered for DELIVERED_MEMORY_SECONDS).
- `db` (embedded default, no Redis): the hub polls the event table for ids above the last one
  it saw. On SQLite writers are serialised, so ids become visible in order; on PostgreSQL a
  lower id may commit after a higher one, so ids skipped over are re-checked for a few seconds.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Callable, Collection
from typing import Any

from asgiref.sync import sync_to_async
from channels import DEFAULT_CHANNEL_LAYER
from channels.layers import channel_layers

from progress import conf, metrics
from progress.events import Event
from progress.models import ProgressEvent
from progress.operations import DASHBOARD_TOPIC
from progress.selectors import event_from_row, event_latest_id
from progress.services import layer_group

logger = logging.getLogger(__name__)
GAP_GRACE_SECONDS = 5.0
RECONCILE_SECONDS = 1.0
DELIVERED_MEMORY_SECONDS = 120.0


class Subscriber:
    """A local reader: a bounded queue plus a filter; overflow marks it so its owner can drop it.
    `topics`, when the reader names them (the WebSocket's subscriptions, a live set), tells the hub
    what it follows by name: the operations dashboard is refreshed only while someone follows it.
    `confined=True` says the reader wants nothing but those topics (a device's push stream): the hub
    then offers it only their events, instead of every event to be refused by its filter."""

    def __init__(
        self, accepts: Callable[[Event], bool], topics: Collection[str] = (), *, confined: bool = False
    ) -> None:
        self.accepts = accepts
        self.topics = topics
        self.confined = confined
        self.queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=conf.QUEUE_SIZE)
        self.overflowed = asyncio.Event()

    def offer(self, event: Event) -> None:
        if self.overflowed.is_set() or not self.accepts(event):
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed.set()
            return
        metrics.delivered.inc()


class Hub:
    """Runs for the lifetime of its event loop once the first subscriber arrives."""

    def __init__(self) -> None:
        self.subscribers: set[Subscriber] = set()
        # Dispatch: every event is offered to each unconfined subscriber, and to the confined ones
        # of its topic only; with thousands of device streams, offering each event to all of them
        # made the fan-out the slowest step from a release to its event.
        self.unconfined: set[Subscriber] = set()
        self.confined: dict[str, set[Subscriber]] = {}
        self.task: asyncio.Task[None] | None = None
        self.overview: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()
        self.wake = asyncio.Event()
        self.transport = conf.transport()
        # Layer transport: the last id reconciled from the table, ids skipped over there (commits
        # out of order), and the ids handed out lately with when.
        self.last: int | None = None
        self.gaps: dict[int, float] = {}
        self.delivered: dict[int, float] = {}

    async def subscribe(self, subscriber: Subscriber) -> None:
        """Register a subscriber; returns once every event stored from now on will reach it."""
        self.add(subscriber)
        if self.task is None or self.task.done():
            # A fresh context: the hub outlives the request that started it, so it must not run its
            # database reads in that request's thread (Django's per-request ThreadSensitiveContext).
            self.task = asyncio.get_running_loop().create_task(self._run(), context=contextvars.Context())
        if self.overview is None or self.overview.done():
            self.overview = asyncio.get_running_loop().create_task(
                self._operations_overview(), context=contextvars.Context()
            )
        self.wake.set()
        await self.ready.wait()

    def add(self, subscriber: Subscriber) -> None:
        """Hand `subscriber` the events dispatched from now on (`subscribe` also starts the hub)."""
        self.subscribers.add(subscriber)
        if subscriber.confined:
            for topic in subscriber.topics:
                self.confined.setdefault(topic, set()).add(subscriber)
        else:
            self.unconfined.add(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)
        self.unconfined.discard(subscriber)
        if subscriber.confined:
            for topic in subscriber.topics:
                following = self.confined.get(topic)
                if following is not None:
                    following.discard(subscriber)
                    if not following:
                        del self.confined[topic]

    def dispatch(self, events: list[Event]) -> None:
        for event in events:
            for subscriber in list(self.unconfined):
                subscriber.offer(event)
            for subscriber in list(self.confined.get(event["topic"], ())):
                subscriber.offer(event)

    async def _run(self) -> None:
        while True:
            try:
                if self.transport == "layer":
                    await self._run_layer()
                else:
                    await self._run_db()
            except asyncio.CancelledError:
                raise
            except Exception:  # a lost Redis/DB connection must not end live delivery for good
                logger.exception("progress hub failed; restarting in 1s")
                self.ready.clear()
                await asyncio.sleep(1.0)

    async def _operations_overview(self) -> None:
        """While a reader of this process follows the operations dashboard, ask every
        OPERATIONS_LIVE_SECONDS for its counts and needs-attention list to be published. Every
        process asks; the shared cache lets one of them publish per interval (the rate is bounded
        by the clock, not by the events or the readers)."""
        from coordinator.services import operations_overview_publish

        while True:
            await asyncio.sleep(conf.operations_live_seconds())
            if not any(DASHBOARD_TOPIC in subscriber.topics for subscriber in list(self.subscribers)):
                continue
            try:
                await sync_to_async(operations_overview_publish)(throttled=True)
            except Exception:  # a failing count must not end the live dashboard for good
                logger.exception("operations overview could not be published; trying again")

    async def _run_layer(self) -> None:
        # A layer instance of its own: channels-redis ties receiving to one event loop, and tests
        # (unlike daphne) run one loop after another in the same process.
        layer = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)
        if self.last is None:
            self.last = await sync_to_async(event_latest_id)()
        reconciler = asyncio.get_running_loop().create_task(self._reconcile())
        try:
            channel = await layer.new_channel("progress.hub.")
            group = await sync_to_async(layer_group)()
            await layer.group_add(group, channel)
            refresher = asyncio.get_running_loop().create_task(self._refresh_group(layer, group, channel))
            self.ready.set()
            try:
                while True:
                    message = await layer.receive(channel)
                    self._hand_out(list(message.get("events", [])), from_table=False)
            finally:
                refresher.cancel()
        finally:
            reconciler.cancel()

    async def _reconcile(self) -> None:
        """The event table read by id, for what the layer did not bring (runs while Redis is down too)."""
        while True:
            await asyncio.sleep(RECONCILE_SECONDS)
            if not self.subscribers or self.last is None:
                continue
            try:
                events, self.last = await sync_to_async(_poll)(self.last, self.gaps)
            except Exception:
                logger.exception("progress hub could not read the event table; trying again")
                continue
            self._hand_out(events, from_table=True)

    def _hand_out(self, events: list[Event], *, from_table: bool) -> None:
        now = time.monotonic()
        for event_id, at in list(self.delivered.items()):
            if now - at <= DELIVERED_MEMORY_SECONDS:
                break  # insertion order is time order
            del self.delivered[event_id]
        fresh = []
        for event in events:
            event_id = int(event["id"])
            if event_id in self.delivered:
                continue
            if not from_table and self.last is not None and event_id <= self.last and event_id not in self.gaps:
                continue  # the table read handed it out already, longer ago than it is remembered
            self.delivered[event_id] = now
            fresh.append(event)
        if fresh:
            self.dispatch(fresh)

    async def _refresh_group(self, layer: Any, group: str, channel: str) -> None:
        while True:  # group membership expires (channels-redis: after a day) unless renewed
            await asyncio.sleep(3600)
            await layer.group_add(group, channel)

    async def _run_db(self) -> None:
        last = 0
        gaps: dict[int, float] = {}
        interval = conf.poll_interval()
        while True:
            if not self.subscribers:  # idle: no queries until someone subscribes again
                self.ready.clear()
                self.wake.clear()
                await self.wake.wait()
                continue
            if not self.ready.is_set():
                last = await sync_to_async(event_latest_id)()
                gaps.clear()
                self.ready.set()
            await asyncio.sleep(interval)
            events, last = await sync_to_async(_poll)(last, gaps)
            if events:
                self.dispatch(events)


def _poll(last: int, gaps: dict[int, float]) -> tuple[list[Event], int]:
    now = time.monotonic()
    for gap_id, seen in list(gaps.items()):
        if now - seen > GAP_GRACE_SECONDS:
            del gaps[gap_id]
    rows = list(ProgressEvent.objects.filter(id__gt=last).order_by("id")[:5000])
    if gaps:
        rows = list(ProgressEvent.objects.filter(id__in=list(gaps)).order_by("id")) + rows
    events: list[Event] = []
    for row in rows:
        row_id = int(row.pk)
        gaps.pop(row_id, None)
        if row_id > last:
            gaps.update({missing: now for missing in range(last + 1, min(row_id, last + 1000))})
            last = row_id
        events.append(event_from_row(row))
    return events, last


_hubs: dict[Any, Hub] = {}


def hub() -> Hub:
    """The hub of the running event loop (daphne has one; tests may create several)."""
    loop = asyncio.get_running_loop()
    found = _hubs.get(loop)
    if found is None:
        for old in [lp for lp in _hubs if lp.is_closed()]:
            del _hubs[old]
        found = _hubs[loop] = Hub()
    return found
