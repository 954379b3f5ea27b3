"""Reads of the device task pool: pending tasks, the day log, the device list, export rows."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django.db.models import Case, Count, Exists, OuterRef, Prefetch, Q, QuerySet, Subquery, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from coordinator.models import User
from pool import conf
from pool.models import (
    OPEN_STATES,
    OPEN_TASK_STATES,
    Delivery,
    DeliveryState,
    Device,
    DeviceGroup,
    DeviceTag,
    Message,
    MessageType,
)
from pool.wire import Target, format_ts


def _live(prefix: str, now: datetime) -> Q:
    return Q(**{f"{prefix}cancelled_at": None}) & (
        Q(**{f"{prefix}expires_at": None}) | Q(**{f"{prefix}expires_at__gt": now})
    )


def device_pending(*, device: Device) -> list[Message]:
    """The device's open, live tasks, oldest first (reads only its own open delivery rows)."""
    now = timezone.now()
    deliveries = (
        Delivery.objects.filter(device=device, state__in=OPEN_STATES)
        .filter(_live("task__", now))
        .select_related("task")
        .order_by("task_id")
    )
    return [d.task for d in deliveries]


def message_log(*, day: date) -> QuerySet[Message]:
    """The messages of one UTC day, in log order."""
    start = datetime.combine(day, time.min, tzinfo=UTC)
    return Message.objects.filter(ts__gte=start, ts__lt=start + timedelta(days=1)).order_by("ts", "seq")


def device_online_until(device: Device) -> datetime | None:
    """The moment a device stops counting as online unless it sends another heartbeat."""
    return device.last_heartbeat_at + conf.online_threshold() if device.last_heartbeat_at else None


def device_is_online(device: Device, now: datetime | None = None) -> bool:
    until = device_online_until(device)
    return until is not None and (now or timezone.now()) < until


def devices_with_pending() -> QuerySet[Device]:
    """Devices annotated with `pending_count`: open live deliveries plus broadcasts not yet fetched."""
    now = timezone.now()
    open_rows = (
        Delivery.objects.filter(device=OuterRef("pk"), state__in=OPEN_STATES)
        .filter(_live("task__", now))
        .order_by()
        .values("device")
        .annotate(n=Count("id"))
        .values("n")
    )
    unseen = (
        _unseen_broadcasts(now)
        .filter(~Exists(Delivery.objects.filter(task=OuterRef("pk"), device=OuterRef(OuterRef("pk")))))
        .order_by()
        .values("target_all")
        .annotate(n=Count("seq"))
        .values("n")
    )
    return Device.objects.annotate(
        pending_count=Coalesce(Subquery(open_rows), 0)
        + Case(When(validated=True, then=Coalesce(Subquery(unseen), 0)), default=Value(0)),
    ).order_by("id")


def _unseen_broadcasts(now: datetime) -> QuerySet[Message]:
    # A staged broadcast's row is made queued (not pending) on the device's next poll: not counted.
    return (
        Message.objects.filter(type=MessageType.TASK, target_all=True, state__in=OPEN_TASK_STATES)
        .filter(_live("", now))
        .exclude(meta__has_key="rollout")
    )


def device_list(*, tag: str | None = None, group: str | None = None) -> QuerySet[Device]:
    """Devices with `pending_count`, their tags and groups loaded, optionally of one tag and/or group."""
    devices = devices_with_pending()
    if tag is not None:
        devices = devices.filter(Exists(DeviceTag.objects.filter(device=OuterRef("pk"), slug=tag)))
    if group is not None:
        devices = devices.filter(
            Exists(DeviceGroup.devices.through.objects.filter(device=OuterRef("pk"), devicegroup__slug=group))
        )
    return devices.prefetch_related(
        Prefetch("tags", queryset=DeviceTag.objects.order_by("slug")),
        Prefetch("groups", queryset=DeviceGroup.objects.order_by("slug")),
    )


def device_get(*, device_id: int) -> Device | None:
    """One device as `device_list` shows it, or None."""
    if not 0 < device_id < 2**63:
        return None
    return device_list().filter(pk=device_id).first()


def device_open_deliveries(*, device: Device, limit: int = 500) -> list[Delivery]:
    """The device's open deliveries of live tasks (what it has to do), oldest task first."""
    now = timezone.now()
    return list(
        Delivery.objects.filter(device=device, state__in=OPEN_STATES)
        .filter(_live("task__", now))
        .select_related("task")
        .order_by("task_id")[:limit]
    )


def device_pending_count(*, device: Device) -> int:
    """Pending tasks of one device, including broadcasts it has not fetched yet."""
    now = timezone.now()
    materialised = Delivery.objects.filter(device=device, state__in=OPEN_STATES).filter(_live("task__", now)).count()
    if not device.validated:
        return materialised
    unseen = (
        _unseen_broadcasts(now).filter(~Exists(Delivery.objects.filter(task=OuterRef("pk"), device=device))).count()
    )
    return materialised + unseen


def task_threads(*, task: Message) -> list[dict[str, Any]]:
    """A task's deliveries, each with the responses of its device, for the admin page."""
    deliveries = list(Delivery.objects.filter(task=task).select_related("device").order_by("device_id"))
    responses: dict[int | None, list[Message]] = {}
    for response in Message.objects.filter(parent_id=task.msg_id, type=MessageType.RESPONSE).order_by("ts", "seq"):
        responses.setdefault(response.device_id, []).append(response)
    return [{"delivery": d, "responses": responses.get(d.device_id, [])} for d in deliveries]


# --- Export for `jobs` (contract 4) ------------------------------------------------------------

POOL_EXPORT_COLUMNS: list[str] = [
    "task_id",
    "task_ts",
    "from",
    "to",
    "title",
    "body",
    "meta",
    "expires_at",
    "cancelled",
    "device_id",
    "device_name",
    "state",
    "progress",
    "updated_at",
    "response_count",
    "responses",
]


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def pool_export_rows(*, user: User, everything: bool) -> Iterator[dict[str, Any]]:
    """One row per task x target device (tasks the user sent; all tasks when `everything`)."""
    tasks = Message.objects.filter(type=MessageType.TASK).order_by("seq")
    if not everything:
        tasks = tasks.filter(sent_by=user)
    chunk: list[Message] = []
    for task in tasks.iterator(chunk_size=500):
        chunk.append(task)
        if len(chunk) >= 500:
            yield from _export_chunk(chunk)
            chunk = []
    if chunk:
        yield from _export_chunk(chunk)


def _export_chunk(tasks: list[Message]) -> Iterator[dict[str, Any]]:
    by_pk = {t.pk: t for t in tasks}
    deliveries: dict[int, list[Delivery]] = {}
    for delivery in (
        Delivery.objects.filter(task_id__in=by_pk).select_related("device").order_by("task_id", "device_id")
    ):
        deliveries.setdefault(delivery.task_id, []).append(delivery)
    responses: dict[tuple[str, int | None], list[dict[str, Any]]] = {}
    answers = Message.objects.filter(type=MessageType.RESPONSE, parent_id__in=[t.msg_id for t in tasks])
    for response in answers.order_by("ts", "seq"):
        responses.setdefault((response.parent_id or "", response.device_id), []).append(
            {
                "id": response.msg_id,
                "ts": format_ts(response.ts),
                "status": response.meta.get("status"),
                "title": response.title,
                "body": response.body,
            }
        )
    for task in tasks:
        base = {
            "task_id": task.msg_id,
            "task_ts": format_ts(task.ts),
            "from": task.sender,
            "to": task.to,
            "title": task.title,
            "body": task.body,
            "meta": _json(task.meta),
            "expires_at": format_ts(task.expires_at) if task.expires_at else None,
            "cancelled": task.cancelled_at is not None,
        }
        rows = deliveries.get(task.pk, [])
        if not rows:
            yield {
                **base,
                "device_id": None,
                "device_name": None,
                "state": None,
                "progress": None,
                "updated_at": None,
                "response_count": 0,
                "responses": "[]",
            }
            continue
        for delivery in rows:
            answered = responses.get((task.msg_id, delivery.device_id), [])
            yield {
                **base,
                "device_id": delivery.device_id,
                "device_name": delivery.device.name,
                "state": delivery.state,
                "progress": None if delivery.progress is None else _json(delivery.progress),
                "updated_at": format_ts(delivery.updated_at),
                "response_count": len(answered),
                "responses": _json(answered),
            }


@dataclass(frozen=True)
class TaskFilters:
    """`GET /pool/tasks` filters; None means any."""

    state: str | None = None
    to: str | None = None
    device_id: int | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    sender: str | None = None


def task_list(*, user: User, filters: TaskFilters) -> QuerySet[Message]:
    """Tasks newest first: the ones `user` sent, or all of them for an admin."""
    tasks = Message.objects.filter(type=MessageType.TASK)
    if not user.is_admin:
        tasks = tasks.filter(sent_by=user)
    if filters.state is not None:
        tasks = tasks.filter(state=filters.state)
    if filters.to is not None:
        tasks = tasks.filter(to=filters.to)
    if filters.device_id is not None:
        tasks = tasks.filter(Exists(Delivery.objects.filter(task=OuterRef("pk"), device_id=filters.device_id)))
    if filters.created_after is not None:
        tasks = tasks.filter(ts__gte=filters.created_after)
    if filters.created_before is not None:
        tasks = tasks.filter(ts__lt=filters.created_before)
    if filters.sender is not None:
        tasks = tasks.filter(sender=f"user:{filters.sender.lower()}")
    return tasks.order_by("-seq")


def task_get(*, user: User, msg_id: str) -> Message | None:
    """One task `user` may see (their own; any for an admin), or None."""
    return task_list(user=user, filters=TaskFilters()).filter(msg_id=msg_id).first()


def task_executions(*, task: Message, limit: int = 1000) -> list[dict[str, Any]]:
    """The first `limit` per-device executions of a task, each with its device's last response."""
    deliveries = list(Delivery.objects.filter(task=task).select_related("device").order_by("device_id")[:limit])
    last: dict[int | None, Message] = {}
    answers = Message.objects.filter(
        parent_id=task.msg_id, type=MessageType.RESPONSE, device_id__in=[d.device_id for d in deliveries]
    )
    for response in answers.order_by("ts", "seq"):
        last[response.device_id] = response
    rows = []
    for delivery in deliveries:
        answer = last.get(delivery.device_id)
        rows.append(
            {
                "device_id": delivery.device_id,
                "device_name": delivery.device.name,
                "state": delivery.state,
                "progress": delivery.progress,
                "attempts": delivery.attempts,
                "created_at": delivery.created_at,
                "released_at": delivery.released_at,
                "updated_at": delivery.updated_at,
                "last_response": None
                if answer is None
                else {
                    "id": answer.msg_id,
                    "ts": format_ts(answer.ts),
                    "status": answer.meta.get("status"),
                    "title": answer.title,
                    "body": answer.body,
                },
            }
        )
    return rows


def task_released_count(*, task: Message) -> int:
    """How many of a task's deliveries have been released to their device (all but a rollout's queued)."""
    return Delivery.objects.filter(task=task, released_at__isnull=False).count()


def task_state_counts(*, task: Message) -> dict[str, int]:
    """How many target devices are in each delivery state."""
    return tasks_state_counts(task_ids=[task.pk])[task.pk]


def tasks_state_counts(*, task_ids: list[int]) -> dict[int, dict[str, int]]:
    """`task_state_counts` of several tasks (an admin page of them) in one grouped query."""
    found = {task_id: {state: 0 for state in DeliveryState.values} for task_id in task_ids}
    rows = Delivery.objects.filter(task_id__in=task_ids).order_by().values("task_id", "state").annotate(n=Count("id"))
    for row in rows:
        found[row["task_id"]][row["state"]] = row["n"]
    return found


def devices_receiving_broadcasts() -> QuerySet[Device]:
    """The devices a `device:*` task reaches: validated and enabled ones."""
    return Device.objects.filter(validated=True, enabled=True)


def target_devices(*, target: Target) -> QuerySet[Device]:
    """The devices a parsed device target reaches now: the one way a target is resolved (at send
    time, and for the composer's live count). An unknown group or id simply matches nothing."""
    if target.all_devices:
        return devices_receiving_broadcasts()
    if target.tag is not None:
        return Device.objects.filter(Exists(DeviceTag.objects.filter(device=OuterRef("pk"), slug=target.tag)))
    if target.group is not None:
        members = DeviceGroup.devices.through.objects.filter(device=OuterRef("pk"), devicegroup__slug=target.group)
        return Device.objects.filter(Exists(members))
    return Device.objects.filter(pk__in=target.device_ids)


def task_unfetched_devices(*, task: Message) -> int:
    """For a live broadcast: validated, enabled devices that have no delivery row yet."""
    if not task.target_all or not task.is_live():
        return 0
    return devices_receiving_broadcasts().exclude(deliveries__task=task).count()


def journal_lag() -> tuple[int, datetime | None]:
    """How many messages wait for the day log, and the time of the oldest."""
    pending = Message.objects.filter(journal_pending=True)
    oldest = pending.order_by("seq").values_list("ts", flat=True).first()
    return pending.count(), oldest


def devices_with_open_deliveries(device_ids: list[str]) -> set[str]:
    """Of these device ids (as text), the ones with a pending or in-progress delivery."""
    ids = [int(i) for i in device_ids if i.isdigit()]
    found = Delivery.objects.filter(device_id__in=ids, state__in=OPEN_STATES).values_list("device_id", flat=True)
    return {str(i) for i in found.distinct()}
