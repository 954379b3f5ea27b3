"""Writes of the device task pool: devices, tokens, tasks, responses, heartbeats, the day log."""

from __future__ import annotations

import functools
import os
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from django.contrib.auth.hashers import check_password, make_password
from django.db import connection, transaction
from django.db.models import (
    BigIntegerField,
    CharField,
    DateTimeField,
    Exists,
    F,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Value,
)
from django.utils import timezone

from coordinator.api.parsers import loads_strict
from coordinator.errors import ValidationFailedError
from coordinator.models import User
from coordinator.services import audit_record
from pool import conf, metrics, selectors
from pool.errors import (
    AlreadyAnsweredError,
    DeviceDisabledError,
    DeviceNotValidatedError,
    InvalidCredentialsError,
    InvalidTargetError,
    NotARolloutError,
    TaskClosedError,
    TaskNotFoundError,
    TaskNotOpenError,
    UnknownDevicesError,
    UnknownGroupError,
)
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
    TaskState,
)
from pool.policy import rollout_policy_parse
from pool.selectors import task_state_counts
from pool.tokens import device_token_encode
from pool.wire import MESSAGE_KEYS, format_ts, message_line, parse_target, parse_ts
from progress.services import progress_publish, progress_publish_many

RESPONSE_STATUSES = ("done", "failed", "progress")
FINAL_STATES = (DeliveryState.DONE, DeliveryState.FAILED)


@functools.cache
def _dummy_hash() -> str:
    """A hash to check against when the device does not exist, so both failures cost the same time."""
    return make_password(secrets.token_urlsafe(16))


# --- The day log -------------------------------------------------------------------------------


# The day log is written from the database, never in the request: a committed write's answer does
# not depend on the disk, and a line is appended whole or not at all (a write the disk cut short
# is truncated away and tried again later). One writer per journal directory: `manage.py
# pool_journal`, which `serve` runs when POOL_JOURNAL_DIR is set.
JOURNAL_BATCH = 1000
# When the writer starts, pending messages already in this much of their day file's end were
# written by a writer that stopped before it could record it: they are not written twice.
JOURNAL_RECONCILE_BYTES = 4 * 1024 * 1024


def journal_write_pending(*, limit: int = JOURNAL_BATCH) -> int:
    """Append up to `limit` pending messages to `<POOL_JOURNAL_DIR>/<UTC day>.jsonl`, in order, and
    mark them written; the number written. An OSError (a full disk) leaves the files as they were
    and the messages pending."""
    directory = conf.journal_dir()
    if directory is None:
        return 0
    with transaction.atomic():
        batch = list(
            Message.objects.select_for_update(skip_locked=True).filter(journal_pending=True).order_by("seq")[:limit]
        )
        if not batch:
            return 0
        directory.mkdir(parents=True, exist_ok=True)
        by_day: dict[str, list[Message]] = {}
        for message in batch:
            by_day.setdefault(message.ts.strftime("%Y-%m-%d"), []).append(message)
        written: list[int] = []
        failure: OSError | None = None
        try:
            for day, messages in by_day.items():
                _append_whole(directory / f"{day}.jsonl", b"".join(message_line(m) for m in messages))
                written.extend(m.pk for m in messages)
        except OSError as exc:
            failure = exc
        # What reached a file is recorded even when a later day's file failed.
        Message.objects.filter(pk__in=written).update(journal_pending=False)
    if failure is not None:
        raise failure
    return len(written)


def _append_whole(path: Path, data: bytes) -> None:
    """Append `data` and flush it to disk, or leave the file as it was and raise OSError."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        size = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except OSError:
            os.ftruncate(fd, size)  # no partial line left to be glued to the next one
            raise
    finally:
        os.close(fd)


def journal_reconcile() -> int:
    """Mark pending messages that are already at the end of their day file (written by a writer
    that stopped before marking them); the number marked."""
    directory = conf.journal_dir()
    if directory is None:
        return 0
    pending = list(Message.objects.filter(journal_pending=True).order_by("seq")[:JOURNAL_BATCH])
    found: list[int] = []
    tails: dict[str, bytes] = {}
    for message in pending:
        day = message.ts.strftime("%Y-%m-%d")
        if day not in tails:
            tails[day] = _tail(directory / f"{day}.jsonl")
        if f'"id":"{message.msg_id}"'.encode() in tails[day]:
            found.append(message.pk)
    Message.objects.filter(pk__in=found).update(journal_pending=False)
    return len(found)


def _tail(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - JOURNAL_RECONCILE_BYTES))
            return handle.read()
    except FileNotFoundError:
        return b""


def _record(message: Message) -> Message:
    """Save a new message, pending for the day log when there is one."""
    message.journal_pending = conf.journal_dir() is not None
    message.save(force_insert=True)
    return message


# --- Devices -----------------------------------------------------------------------------------


def new_secret() -> str:
    return secrets.token_urlsafe(32)


@transaction.atomic
def device_create(
    *, name: str, kind: str = "", validated: bool = False, tags: Iterable[str] = ()
) -> tuple[Device, str]:
    """Create a device (with its tags); returns it and its secret (shown once, stored hashed)."""
    secret = new_secret()
    device = Device.objects.create(name=name, kind=kind, validated=validated, secret_hash=make_password(secret))
    if tags:
        # Its enrolment, not an operator's change (anyone may enrol): not audited.
        _tags_replace(device=device, tags=tags)
    return device, secret


@transaction.atomic
def device_set_tags(*, device: Device, tags: Iterable[str]) -> list[str]:
    """Replace a device's tags; open continuous tasks of a tag it gains reach it now. The new tags."""
    had, wanted = _tags_replace(device=device, tags=tags)
    if wanted != had:
        # Tags decide which devices every master's tag tasks reach: who changed them is kept.
        audit_record(action="device.set_tags", target=device, before={"tags": had}, after={"tags": wanted})
    return wanted


def _tags_replace(*, device: Device, tags: Iterable[str]) -> tuple[list[str], list[str]]:
    """The device's tags before and after making them `tags` (both sorted)."""
    wanted = sorted(set(tags))
    have = set(DeviceTag.objects.filter(device=device).values_list("slug", flat=True))
    DeviceTag.objects.filter(device=device).exclude(slug__in=wanted).delete()
    gained = [slug for slug in wanted if slug not in have]
    DeviceTag.objects.bulk_create([DeviceTag(device=device, slug=slug) for slug in gained], ignore_conflicts=True)
    continuous_attach(devices=[device], targets=[f"device:tag:{slug}" for slug in gained])
    return sorted(have), wanted


@transaction.atomic
def group_set_devices(*, group: DeviceGroup, devices: Iterable[Device]) -> int:
    """Make `devices` the members of `group`; open continuous tasks of the group reach the new
    members now. The number of devices that joined."""
    wanted = {d.pk for d in devices}
    have = set(group.devices.values_list("pk", flat=True))
    group.devices.remove(*(have - wanted))
    joined = sorted(wanted - have)
    group.devices.add(*joined)
    continuous_attach(devices=list(Device.objects.filter(pk__in=joined)), targets=[f"device:group:{group.slug}"])
    return len(joined)


def continuous_attach(*, devices: list[Device], targets: list[str]) -> int:
    """Give `devices` a delivery of every open continuous task addressed to one of `targets`
    (`device:tag:<slug>` / `device:group:<slug>`), as AWS IoT's continuous jobs do; how many."""
    if not devices or not targets:
        return 0
    now = timezone.now()
    tasks = list(
        _live_tasks(now)
        .filter(to__in=targets, state__in=OPEN_TASK_STATES, meta__continuous=True)
        .values_list("pk", "meta")
    )
    rows = [
        _new_delivery(task_id, d.pk, now, rollout=_is_rollout_meta(meta)) for task_id, meta in tasks for d in devices
    ]
    created = Delivery.objects.bulk_create(rows, ignore_conflicts=True)
    push_devices(device_ids=[row.device_id for row in created if row.state == DeliveryState.PENDING])
    return len(created)


@transaction.atomic
def device_issue_secret(*, device: Device) -> str:
    """Replace a device's secret; the new one is returned once."""
    secret = new_secret()
    Device.objects.filter(pk=device.pk).update(secret_hash=make_password(secret))
    device.refresh_from_db()
    audit_record(action="device.issue_secret", target=device)
    return secret


def device_set_flags(*, devices: Iterable[Device], validated: bool | None = None, enabled: bool | None = None) -> int:
    """Validate/unvalidate or enable/disable devices; takes effect on their next request."""
    changes: dict[str, Any] = {}
    if validated is not None:
        changes["validated"] = validated
    if enabled is not None:
        changes["enabled"] = enabled
    ids = [d.pk for d in devices]
    audit_record(action="device.set_flags", target=f"{len(ids)} device(s)", after={"devices": ids, **changes})
    return Device.objects.filter(pk__in=ids).update(**changes)


def device_token_issue(*, device_id: int, secret: str) -> tuple[str, datetime]:
    """Exchange a device id and secret for a device JWT and its expiry."""
    device = Device.objects.filter(pk=device_id).first() if 0 < device_id < 2**63 else None
    if not check_password(secret, device.secret_hash if device else _dummy_hash()) or device is None:
        raise InvalidCredentialsError()
    if not device.enabled:
        raise DeviceDisabledError()
    if not device.validated:
        raise DeviceNotValidatedError()
    return device_token_encode(device_id=device.pk)


def _touch(device: Device, kind: str, now: datetime, heartbeat: bool = False) -> None:
    changes: dict[str, Any] = {"last_activity_at": now, "last_activity_type": kind}
    if heartbeat:
        changes["last_heartbeat_at"] = now
    Device.objects.filter(pk=device.pk).update(**changes)


# --- Tasks -------------------------------------------------------------------------------------


def _owner(task: Message) -> int | None:
    return task.sent_by_id


def _new_delivery(task: Message | int, device_id: int, now: datetime, *, rollout: bool) -> Delivery:
    """An unsaved delivery: a rollout's waits `queued` for its release (pool.rollouts); any other
    task's is pending for its device at once (released now, its first attempt)."""
    task_id = task if isinstance(task, int) else task.pk
    if rollout:
        return Delivery(
            task_id=task_id, device_id=device_id, state=DeliveryState.QUEUED, created_at=now, updated_at=now
        )
    return Delivery(task_id=task_id, device_id=device_id, created_at=now, updated_at=now, released_at=now, attempts=1)


def _deliveries_insert(*, task: Message, devices: QuerySet[Device], now: datetime, rollout: bool) -> int:
    """One delivery of `task` for every device of `devices`, as one `INSERT … SELECT` built by the
    ORM; how many. The target's devices never travel through Python, so a task to 100,000 devices
    is one statement, not 100,000 model objects sent back in batches."""
    template = _new_delivery(task, 0, now, rollout=rollout)
    # Every column is an annotation, so the SELECT lists them in exactly this order.
    columns: dict[str, Any] = {
        "task_id": Value(task.pk, output_field=BigIntegerField()),
        "device_id": F("pk"),
        "state": Value(template.state, output_field=CharField()),
        "created_at": Value(now, output_field=DateTimeField()),
        "updated_at": Value(now, output_field=DateTimeField()),
        "released_at": Value(template.released_at, output_field=DateTimeField()),
        "attempts": Value(template.attempts, output_field=IntegerField()),
    }
    rows = devices.order_by().annotate(**{f"new_{name}": value for name, value in columns.items()})
    select, params = rows.values_list(*(f"new_{name}" for name in columns)).query.sql_with_params()
    quote = connection.ops.quote_name
    column_of = {f.attname: f.column for f in Delivery._meta.concrete_fields}
    names = ", ".join(quote(str(column_of[name])) for name in columns)
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {quote(Delivery._meta.db_table)} ({names}) {select}", params)
        return max(cursor.rowcount, 0)


def task_expiry_check(*, meta: dict[str, Any], expires_at: datetime | None, now: datetime) -> datetime | None:
    """The task's expiry from `expires_at` and/or `meta.expires_at` (the seed's place for it),
    checked: an ISO time in the future, the two agreeing when both are given."""
    raw = meta.get("expires_at")
    if raw is not None:
        try:
            if not isinstance(raw, str) or len(raw) > 40:
                raise ValueError
            parsed = parse_ts(raw)
        except ValueError:
            raise ValidationFailedError(
                "`meta.expires_at` must be an ISO time like 2026-12-10T02:00:00Z.",
                extra={"fields": {"meta.expires_at": ["Must be an ISO time like 2026-12-10T02:00:00Z."]}},
            ) from None
        if expires_at is not None and format_ts(parsed) != format_ts(expires_at):
            raise ValidationFailedError(
                "`meta.expires_at` and `expires_at` disagree: give one of them.",
                extra={"fields": {"meta.expires_at": ["Disagrees with expires_at."]}},
            )
        expires_at = expires_at or parsed
    if expires_at is not None and expires_at <= now:
        field = "meta.expires_at" if raw is not None else "expires_at"
        raise ValidationFailedError(
            f"`{field}` must be in the future.", extra={"fields": {field: ["The expiry must be in the future."]}}
        )
    return expires_at


@transaction.atomic
def task_create(
    *,
    user: User | None,
    to: str,
    title: str = "",
    body: str = "",
    meta: dict[str, Any] | None = None,
    expires_at: datetime | None = None,
) -> Message:
    """Store a task for one, several or all devices, or a tag's or group's devices, with one
    delivery row per device it reaches now."""
    target = parse_target(to)
    if not target.is_devices:
        raise InvalidTargetError(
            "A task is addressed to devices: device:<id>, device:*, device:[<id>,...], device:tag:<slug> "
            "or device:group:<slug>."
        )
    meta = dict(meta or {})
    if not isinstance(meta.get("continuous", False), bool):
        raise ValidationFailedError(
            "`meta.continuous` must be true or false.", extra={"fields": {"meta.continuous": ["Must be a boolean."]}}
        )
    rollout = "rollout" in meta
    if rollout:
        rollout_policy_parse(meta["rollout"])
    if target.group is not None and not DeviceGroup.objects.filter(slug=target.group).exists():
        raise UnknownGroupError(f"No device group is named {target.group!r}.", extra={"group": target.group})
    if target.device_ids:
        known = set(Device.objects.filter(pk__in=target.device_ids).values_list("pk", flat=True))
        unknown = [pk for pk in target.device_ids if pk not in known]
        if unknown:
            raise UnknownDevicesError(
                "Unknown device ids: " + ", ".join(str(pk) for pk in unknown) + ".", extra={"unknown": unknown}
            )
    now = timezone.now()
    expires_at = task_expiry_check(meta=meta, expires_at=expires_at, now=now)
    if expires_at is not None:
        meta["expires_at"] = format_ts(expires_at)
    task = _record(
        Message(
            ts=now,
            sender=f"user:{user.email}" if user else "backend",
            to=target.canonical(),
            type=MessageType.TASK,
            title=title,
            body=body,
            meta=meta,
            target_all=target.all_devices,
            expires_at=expires_at,
            sent_by=user,
            state=TaskState.SCHEDULED if rollout else TaskState.IN_PROGRESS,
        )
    )
    # A broadcast's rows are otherwise made lazily, on each device's next poll (see
    # broadcasts_materialise); a staged one needs them all now, queued in release order.
    devices = selectors.target_devices(target=target)
    reached = (
        0
        if target.all_devices and not rollout
        else _deliveries_insert(task=task, devices=devices, now=now, rollout=rollout)
    )
    if not reached and not task.is_continuous and not rollout:
        # Nobody to wait for, and nobody can join: complete at once rather than stay open forever.
        task.state = TaskState.COMPLETED
        Message.objects.filter(pk=task.pk).update(state=task.state)
    first = DeliveryState.QUEUED if rollout else DeliveryState.PENDING
    progress_publish(
        topic=f"pooltask:{task.msg_id}",
        kind="end" if task.state == TaskState.COMPLETED else "new",
        text=title or task.msg_id,
        state={
            "to": task.to,
            "task_state": task.state,
            "devices": {str(pk): first.value for pk in devices.order_by("pk").values_list("pk", flat=True)[:1000]}
            if reached
            else {},
            "counts": task_state_counts(task=task),
        },
        owner_id=_owner(task),
    )
    if target.all_devices and not rollout:
        push_all()
    elif not rollout and reached:
        push_devices(device_ids=devices.values_list("pk", flat=True))
    return task


def _task_complete_if_finished(task: Message) -> bool:
    """Complete a task whose every delivery is final (done, failed, timed out, cancelled), unless
    it is continuous (devices may still join it) or a rollout (its step decides). Guarded by state."""
    if task.is_continuous or _is_rollout(task):
        return False
    # The task row is locked first: two last answers committing at once would each still see the
    # other's delivery open (neither committed) and neither would complete the task. Locked, the
    # second looks only after the first has committed. (Final answers of one task take turns here.)
    _lock_task(task)
    if Delivery.objects.filter(task=task, state__in=[DeliveryState.QUEUED, *OPEN_STATES]).exists():
        return False
    if not Message.objects.filter(pk=task.pk, state=TaskState.IN_PROGRESS).update(state=TaskState.COMPLETED):
        return False
    task.state = TaskState.COMPLETED
    return True


def _lock_task(task: Message) -> None:
    """Hold the task's row until the transaction ends (PostgreSQL; SQLite's writers take turns anyway)."""
    list(Message.objects.select_for_update().filter(pk=task.pk).values_list("pk", flat=True))


@transaction.atomic
def task_expire(*, task: Message, now: datetime) -> bool:
    """End an open task whose expiry has passed: its released deliveries that are not final become
    `timed_out`, its unreleased ones `cancelled`, and the task `completed` (continuous ones too: the
    expiry is their end). False when it was not open or not yet expired."""
    # Guarded on the task row: of two clusters sweeping at once, or an expiry racing a cancel,
    # one changes it and the other finds it closed and does nothing.
    ended = Message.objects.filter(
        pk=task.pk, type=MessageType.TASK, state__in=OPEN_TASK_STATES, cancelled_at=None, expires_at__lte=now
    ).update(state=TaskState.COMPLETED)
    if not ended:
        return False
    task.state = TaskState.COMPLETED
    rows = Delivery.objects.filter(task=task)
    # Guarded by state: an answer that committed first keeps its row and its answer.
    timed_out = rows.filter(state__in=OPEN_STATES).update(state=DeliveryState.TIMED_OUT, updated_at=now)
    never_released = rows.filter(state=DeliveryState.QUEUED).update(state=DeliveryState.CANCELLED, updated_at=now)
    task_decision_record(
        task,
        kind="end",
        text=f"expired: {timed_out} timed out, {never_released} never released",
        state={"expired": True, "timed_out": timed_out, "cancelled": never_released},
        now=now,
        about="expiry",
    )
    return True


def tasks_expire_due(*, now: datetime) -> int:
    """Expire every open task whose expiry has passed (the periodic sweep); how many."""
    due = Message.objects.filter(
        type=MessageType.TASK, state__in=OPEN_TASK_STATES, cancelled_at=None, expires_at__lte=now
    ).values_list("pk", flat=True)
    return sum(task_expire(task=task, now=now) for task in Message.objects.filter(pk__in=list(due)))


@transaction.atomic
def task_cancel(*, task: Message) -> bool:
    """Cancel a task: it is pending for nobody from now on. False when it already was."""
    now = timezone.now()
    # Guarded: of two concurrent cancels (or a cancel racing the rollout sweep's abort) one wins.
    closed = Message.objects.filter(pk=task.pk, type=MessageType.TASK, cancelled_at=None).exclude(
        state__in=[TaskState.ABORTED, TaskState.COMPLETED]
    )
    if not closed.update(cancelled_at=now, state=TaskState.CANCELLED):
        return False
    Delivery.objects.filter(task=task, state__in=[DeliveryState.QUEUED, *OPEN_STATES]).update(
        state=DeliveryState.CANCELLED, updated_at=now
    )
    task.cancelled_at = now
    audit_record(action="device_task.cancel", target=task, after={"cancelled_at": now})
    task.state = TaskState.CANCELLED
    progress_publish(
        topic=f"pooltask:{task.msg_id}",
        kind="end",
        text="cancelled",
        state={"cancelled": True, "counts": task_state_counts(task=task)},
        owner_id=_owner(task),
    )
    return True


def _live_tasks(now: datetime) -> Any:
    return Message.objects.filter(type=MessageType.TASK, cancelled_at=None).filter(
        Q(expires_at=None) | Q(expires_at__gt=now)
    )


def _is_rollout(task: Message) -> bool:
    return _is_rollout_meta(task.meta)


def _is_rollout_meta(meta: Any) -> bool:
    return isinstance(meta, dict) and "rollout" in meta


def _set_paused(task: Message, paused: bool) -> bool:
    if not _is_rollout(task):
        raise NotARolloutError()
    if task.state not in OPEN_TASK_STATES or task.cancelled_at is not None:
        raise TaskNotOpenError(f"This task is {task.state}.")
    now = timezone.now()
    # Guarded: the sweep reads paused_at in its own transaction; a second pause changes nothing.
    rows = Message.objects.filter(pk=task.pk, state__in=OPEN_TASK_STATES, paused_at__isnull=paused)
    changed = bool(rows.update(paused_at=now if paused else None))
    task.refresh_from_db()
    if changed:
        verb = "paused" if paused else "resumed"
        audit_record(action=f"rollout.{'pause' if paused else 'resume'}", target=task, after={"paused": paused})
        task_decision_record(task, kind="msg", text=f"rollout {verb}", state={"paused": paused}, now=now)
    return changed


@transaction.atomic
def task_pause(*, task: Message) -> bool:
    """Pause a staged rollout: nothing more is released until it is resumed. False if it was paused."""
    return _set_paused(task, True)


@transaction.atomic
def task_resume(*, task: Message) -> bool:
    """Resume a paused rollout. False if it was not paused."""
    return _set_paused(task, False)


def task_decision_record(
    task: Message,
    *,
    kind: Literal["msg", "end"],
    text: str,
    state: dict[str, Any],
    now: datetime,
    about: Literal["rollout", "expiry"] = "rollout",
) -> None:
    """A decision about a task (a rollout's step, its expiry): a progress event on the task's topic
    and an `info` line in the day log, its numbers in `meta.<about>`."""
    _record(
        Message(
            ts=now,
            sender="backend",
            to=task.sender,
            type=MessageType.INFO,
            title=text,
            parent_id=task.msg_id,
            meta={about: state},
        )
    )
    progress_publish(
        topic=f"pooltask:{task.msg_id}",
        kind=kind,
        text=text,
        state={**state, "task_state": task.state, "counts": task_state_counts(task=task)},
        owner_id=_owner(task),
    )


# --- Push: `GET /pool/events` wakes a device when something becomes pending for it ----------------

PUSH_ALL = "poolpush:*"


def push_topic(device_id: int) -> str:
    return f"poolpush:{device_id}"


def push_devices(*, device_ids: Iterable[int]) -> None:
    """After commit, wake the event streams of these devices: something is pending for them."""
    # Kind `end`: each wake-up closes its topic at once, so 100,000 device topics never show as
    # live streams (admin Live page, progress snapshots); the event is stored and delivered all the same.
    progress_publish_many(
        [{"topic": push_topic(pk), "kind": "end", "text": "pending"} for pk in sorted(set(device_ids))]
    )


def push_all() -> None:
    """After commit, wake every device's stream (a broadcast: each fetches /pool/pending)."""
    progress_publish(topic=PUSH_ALL, kind="end", text="pending")


def _live_broadcasts(now: datetime) -> Any:
    return _live_tasks(now).filter(target_all=True, state__in=OPEN_TASK_STATES)


def broadcasts_materialise(*, device: Device) -> int:
    """Insert the delivery rows of live broadcasts this device has not seen yet; returns how many.

    Only broadcasts newer than the device's watermark are looked at, so the cost follows new
    broadcasts, not history. The watermark trails "now" by a margin so that a broadcast whose
    transaction committed late is still found on a later call.
    """
    now = timezone.now()
    candidates = _live_broadcasts(now).filter(~Exists(Delivery.objects.filter(task=OuterRef("pk"), device=device)))
    if device.broadcasts_seen_until is not None:
        candidates = candidates.filter(ts__gt=device.broadcasts_seen_until)
    found = list(candidates.values_list("pk", "meta"))
    if found:
        # A staged broadcast's row waits queued for its rollout's release, like the rows made when it was sent.
        Delivery.objects.bulk_create(
            [_new_delivery(pk, device.pk, now, rollout=_is_rollout_meta(meta)) for pk, meta in found],
            ignore_conflicts=True,
        )
    mark = now - conf.broadcast_margin()
    # Move the watermark only in big steps: most polls then write nothing at all.
    if device.broadcasts_seen_until is None or mark - device.broadcasts_seen_until > conf.broadcast_margin() / 5:
        Device.objects.filter(pk=device.pk).filter(
            Q(broadcasts_seen_until=None) | Q(broadcasts_seen_until__lt=mark)
        ).update(broadcasts_seen_until=mark)
        device.broadcasts_seen_until = mark
    return len(found)


def _delivery_for(task: Message, device: Device, *, replaying: bool = False) -> Delivery:
    delivery = Delivery.objects.filter(task=task, device=device).first()
    if delivery is None and task.target_all:
        if task.state not in OPEN_TASK_STATES and not replaying:
            raise TaskClosedError()  # an ended broadcast gains no new devices (an imported answer is history)
        now = timezone.now()
        Delivery.objects.bulk_create(
            [_new_delivery(task, device.pk, now, rollout=_is_rollout(task))], ignore_conflicts=True
        )
        delivery = Delivery.objects.filter(task=task, device=device).first()
    if delivery is None:
        raise TaskNotFoundError()
    return delivery


@transaction.atomic
def response_create(
    *,
    device: Device,
    parent_id: str,
    status: str,
    title: str = "",
    body: str = "",
    meta: dict[str, Any] | None = None,
) -> Message:
    """Store a device's answer to a task and move its delivery (done/failed are final)."""
    task = Message.objects.filter(msg_id=parent_id, type=MessageType.TASK).first()
    if task is None:
        raise TaskNotFoundError()
    delivery = _delivery_for(task, device)
    if delivery.state == DeliveryState.QUEUED:
        raise TaskNotFoundError()  # not released to this device (yet): it cannot have seen it
    if delivery.state in FINAL_STATES:
        raise AlreadyAnsweredError()
    now = timezone.now()
    if delivery.state in (DeliveryState.CANCELLED, DeliveryState.TIMED_OUT) or not task.is_live(now):
        raise TaskClosedError()
    meta = {**(meta or {}), "status": status}
    changes: dict[str, Any] = {"state": status, "updated_at": now}
    if status == "progress":
        changes["progress"] = meta.get("progress", body or None)
    if status != "progress" and not task.is_continuous and not _is_rollout(task):
        # A final answer may complete the task, which needs its row locked (_task_complete_if_finished):
        # lock it before the delivery, in the order cancel and expiry take them, so none deadlock.
        _lock_task(task)
    # The conditional UPDATE is the guard: of two concurrent final answers from one device only
    # one finds the row still open (PostgreSQL re-checks the WHERE after the row lock; SQLite
    # runs writers one at a time), the other gets 409 and its message is rolled back.
    if not Delivery.objects.filter(pk=delivery.pk, state__in=OPEN_STATES).update(**changes):
        closed = Delivery.objects.filter(
            pk=delivery.pk, state__in=[DeliveryState.CANCELLED, DeliveryState.TIMED_OUT]
        ).exists()
        raise TaskClosedError() if closed else AlreadyAnsweredError()
    metrics.response_counted(status)
    response = _record(
        Message(
            ts=now,
            sender=device.address,
            to=task.sender,
            type=MessageType.RESPONSE,
            title=title,
            body=body,
            parent_id=task.msg_id,
            meta=meta,
            device=device,
        )
    )
    _touch(device, MessageType.RESPONSE, now)
    topic = f"pooltask:{task.msg_id}"
    state = {
        "device_id": device.pk,
        "device_state": status,
        "progress": changes.get("progress"),
        "counts": task_state_counts(task=task),
    }
    progress_publish(
        topic=topic,
        kind="msg",
        text=f"{device.address}: {status} {title or body}".strip(),
        state=state,
        owner_id=_owner(task),
    )
    if status != "progress" and _task_complete_if_finished(task):
        progress_publish(topic=topic, kind="end", text="", state=state, owner_id=_owner(task))
    return response


@transaction.atomic
def heartbeat_record(*, device: Device, title: str = "", body: str = "", meta: dict[str, Any] | None = None) -> Message:
    """Store a heartbeat message and mark the device as seen now."""
    now = timezone.now()
    message = _record(
        Message(
            ts=now,
            sender=device.address,
            to="backend",
            type=MessageType.HEARTBEAT,
            title=title,
            body=body,
            meta=meta or {},
            device=device,
        )
    )
    _touch(device, MessageType.HEARTBEAT, now, heartbeat=True)
    progress_publish(
        topic=f"pooldevice:{device.pk}",
        kind="msg",
        text=f"{device.address} heartbeat",
        state={
            "online": True,
            "last_seen": now.isoformat(),
            "badge": "online",
            "online_until": (now + conf.online_threshold()).timestamp(),
        },
        owner_id=None,
    )
    return message


# --- JSONL import ------------------------------------------------------------------------------


@dataclass
class ImportReport:
    """Outcome of a JSONL import: new messages, already present ids, bad lines."""

    created: int = 0
    skipped: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    lines: int = 0


_MSG_ID = re.compile(r"msg_[0-9A-Za-z_-]{1,36}")
_DEVICE_FROM = re.compile(r"device:(\d{1,18})")


def _parse_line(raw: str) -> tuple[Message, str | None]:
    """A validated, unsaved message from one JSONL line (and the response status, if any)."""
    try:
        data = loads_strict(raw)
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    missing = [key for key in ("id", "ts", "from", "to", "type") if key not in data]
    if missing:
        raise ValueError("missing keys: " + ", ".join(missing))
    unknown = sorted(set(data) - set(MESSAGE_KEYS))
    if unknown:
        raise ValueError("unknown keys: " + ", ".join(unknown))
    msg_id = data["id"]
    if not isinstance(msg_id, str) or not _MSG_ID.fullmatch(msg_id):
        raise ValueError("`id` must look like msg_<hex>")
    try:
        ts = parse_ts(data["ts"]) if isinstance(data["ts"], str) else None
    except ValueError:
        ts = None
    if ts is None:
        raise ValueError("`ts` is not an ISO timestamp like 2026-06-03T12:34:56Z")
    if data["type"] not in MessageType.values:
        raise ValueError(f"`type` must be one of {', '.join(MessageType.values)}")
    for key in ("from", "to"):
        if not isinstance(data[key], str) or not data[key] or len(data[key]) > 4000:
            raise ValueError(f"`{key}` must be a non-empty string")
    for key in ("title", "body"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise ValueError(f"`{key}` must be a string")
    parent_id = data.get("parent_id")
    if parent_id is not None and (not isinstance(parent_id, str) or len(parent_id) > 40):
        raise ValueError("`parent_id` must be a message id or null")
    meta = data.get("meta") or {}
    if not isinstance(meta, dict):
        raise ValueError("`meta` must be an object")
    message = Message(
        msg_id=msg_id,
        ts=ts,
        sender=data["from"],
        to=data["to"],
        type=data["type"],
        title=data.get("title") or "",
        body=data.get("body") or "",
        parent_id=parent_id,
        meta=meta,
    )
    if message.type == MessageType.TASK:
        message.state = TaskState.IN_PROGRESS
        target = parse_target(message.to)  # InvalidTargetError is a ValueError-like bad line
        message.target_all = target.all_devices
        if isinstance(meta.get("expires_at"), str):
            message.expires_at = parse_ts(meta["expires_at"])
            if message.expires_at <= timezone.now():
                # History, not a decision: it ended when it expired (its open rows are timed out
                # after the answers are replayed), and the sweep has nothing to announce.
                message.state = TaskState.COMPLETED
    status = meta.get("status") if message.type == MessageType.RESPONSE else None
    return message, status if status in RESPONSE_STATUSES else None


def _import_batch(batch: list[Message], report: ImportReport, users: dict[str, User | None]) -> None:
    ids = [m.msg_id for m in batch]
    present = set(Message.objects.filter(msg_id__in=ids).values_list("msg_id", flat=True))
    fresh: list[Message] = []
    for message in batch:
        if message.msg_id in present:
            report.skipped += 1
            continue
        present.add(message.msg_id)
        fresh.append(message)
    if not fresh:
        return
    device_ids = {int(m.group(1)) for x in fresh if (m := _DEVICE_FROM.fullmatch(x.sender))}
    task_targets: dict[str, tuple[int, ...]] = {
        x.msg_id: parse_target(x.to).device_ids for x in fresh if x.type == MessageType.TASK
    }
    for targets in task_targets.values():
        device_ids.update(targets)
    known = set(Device.objects.filter(pk__in=device_ids).values_list("pk", flat=True))
    for message in fresh:
        if (m := _DEVICE_FROM.fullmatch(message.sender)) and int(m.group(1)) in known:
            message.device_id = int(m.group(1))
        if message.sender.startswith("user:"):
            email = message.sender[5:].lower()
            if email not in users:
                users[email] = User.objects.filter(email=email).first()
            message.sent_by = users[email]
    with transaction.atomic():
        created = Message.objects.bulk_create(fresh)
        by_id = {m.msg_id: m for m in created}
        deliveries = [
            Delivery(task_id=by_id[msg_id].pk, device_id=pk, created_at=by_id[msg_id].ts, updated_at=by_id[msg_id].ts)
            for msg_id, targets in task_targets.items()
            for pk in targets
            if pk in known
        ]
        Delivery.objects.bulk_create(deliveries, ignore_conflicts=True)
        broadcasts = [m.ts for m in created if m.target_all]
        if broadcasts:
            # Imported broadcasts may be older than a device's watermark: move it back.
            oldest = min(broadcasts)
            Device.objects.filter(broadcasts_seen_until__gte=oldest).update(
                broadcasts_seen_until=oldest - timedelta(microseconds=1)
            )
    report.created += len(created)


def _apply_imported_responses(response_seqs: list[int]) -> None:
    """Replay imported done/failed/progress answers onto delivery rows, oldest first."""
    for start in range(0, len(response_seqs), 1000):
        chunk = response_seqs[start : start + 1000]
        responses = list(Message.objects.filter(pk__in=chunk).exclude(device=None).order_by("ts", "seq"))
        tasks = {
            t.msg_id: t
            for t in Message.objects.filter(type=MessageType.TASK, msg_id__in={r.parent_id for r in responses})
        }
        with transaction.atomic():
            for response in responses:
                task = tasks.get(response.parent_id or "")
                if task is None or response.device is None:
                    continue
                try:
                    delivery = _delivery_for(task, response.device, replaying=True)
                except TaskNotFoundError:
                    continue
                status = response.meta.get("status")
                changes: dict[str, Any] = {"state": status, "updated_at": response.ts}
                if status == "progress":
                    changes["progress"] = response.meta.get("progress", response.body or None)
                Delivery.objects.filter(pk=delivery.pk, state__in=OPEN_STATES).update(**changes)
            for task in tasks.values():
                _task_complete_if_finished(task)  # every target answered in the file: it is over


def pool_import_jsonl(
    *,
    path: Path,
    on_progress: Callable[[ImportReport], None] | None = None,
    batch_size: int = 1000,
) -> ImportReport:
    """Load a task-pool-backend day file: idempotent by message id, keeps ids and timestamps."""
    report = ImportReport()
    users: dict[str, User | None] = {}
    batch: list[Message] = []
    response_ids: list[str] = []

    def flush() -> None:
        _import_batch(batch, report, users)
        batch.clear()
        if on_progress is not None:
            on_progress(report)

    try:
        handle = open(path, "rb")
    except OSError as exc:
        report.errors.append({"file": str(path), "line": 0, "error": f"cannot open: {exc.strerror or exc}"})
        return report
    with handle:
        for line_no, raw_bytes in enumerate(handle, start=1):
            report.lines = line_no
            if not raw_bytes.strip():
                continue
            try:
                message, status = _parse_line(raw_bytes.decode("utf-8"))
            except UnicodeDecodeError as exc:
                report.errors.append({"file": str(path), "line": line_no, "error": f"not UTF-8: {exc.reason}"})
                continue
            except (ValueError, InvalidTargetError) as exc:
                error = exc.message if isinstance(exc, InvalidTargetError) else str(exc)
                report.errors.append({"file": str(path), "line": line_no, "error": error})
                continue
            if status is not None:
                response_ids.append(message.msg_id)
            batch.append(message)
            if len(batch) >= batch_size:
                flush()
    flush()
    seqs: list[int] = []
    for start in range(0, len(response_ids), 1000):
        seqs.extend(Message.objects.filter(msg_id__in=response_ids[start : start + 1000]).values_list("pk", flat=True))
    _apply_imported_responses(sorted(seqs))
    # What imported, expired tasks left open did not finish in time (guarded: answers kept).
    Delivery.objects.filter(
        state__in=OPEN_STATES, task__state=TaskState.COMPLETED, task__expires_at__lte=timezone.now()
    ).update(state=DeliveryState.TIMED_OUT)
    return report
