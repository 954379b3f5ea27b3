"""Devices, the message log and per-device delivery state of the task pool (seed 000)."""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone


def new_message_id() -> str:
    return "msg_" + uuid.uuid4().hex


class Device(models.Model):
    """The seed's `DeviceUser`: an integer id, a kind, a `validado` flag, enabled or not."""

    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=100, blank=True, default="")
    validated = models.BooleanField(default=False, help_text="The seed's `validado`: staff accepted this device.")
    enabled = models.BooleanField(default=True)
    secret_hash = models.CharField(max_length=256, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_activity_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_activity_type = models.CharField(max_length=16, blank=True, default="", editable=False)
    last_heartbeat_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Broadcasts (`device:*`) created up to this instant have delivery rows for this device
    # (see docs/pool.md, "Delivery state"); null means none has been looked at yet.
    broadcasts_seen_until = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"device:{self.pk} {self.name}"

    # A device is what `request.user` is on device endpoints; it is never a platform `User`.
    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def is_anonymous(self) -> bool:
        return False

    @property
    def address(self) -> str:
        return f"device:{self.pk}"


# Tags and group slugs: what `device:tag:<slug>` and `device:group:<slug>` name.
SLUG_PATTERN = r"[a-z0-9-]{1,64}"


class DeviceTag(models.Model):
    """One tag of one device (a short slug), set by staff, masters, admins or the device at enrolment."""

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="tags")
    slug = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["device_id", "slug"]
        constraints = [models.UniqueConstraint(fields=["device", "slug"], name="pool_device_tag_unique")]
        # `device:tag:<slug>` and the tag filter read the devices of one slug.
        indexes = [models.Index(fields=["slug", "device"], name="pool_device_tag_slug")]

    def __str__(self) -> str:
        return f"device:{self.device_id} #{self.slug}"


class DeviceGroup(models.Model):
    """A static, named set of devices (edited in the admin); `device:group:<slug>` addresses it."""

    slug = models.CharField(
        max_length=64,
        unique=True,
        validators=[RegexValidator(rf"^{SLUG_PATTERN}\Z", "Lower-case letters, digits and dashes (at most 64).")],
        help_text="Lower-case letters, digits and dashes; tasks address the group as device:group:<slug>.",
    )
    name = models.CharField(max_length=200, blank=True, default="")
    devices = models.ManyToManyField(Device, related_name="groups", blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["slug"]
        verbose_name = "device group"

    def __str__(self) -> str:
        return self.name or self.slug


class MessageType(models.TextChoices):
    TASK = "task", "Task"
    RESPONSE = "response", "Response"
    INFO = "info", "Info"
    HEARTBEAT = "heartbeat", "Heartbeat"
    ERROR = "error", "Error"


class TaskState(models.TextChoices):
    """A task's own state (a staged rollout starts `scheduled`, every other task `in_progress`)."""

    SCHEDULED = "scheduled", "Scheduled"
    IN_PROGRESS = "in_progress", "In progress"
    COMPLETED = "completed", "Completed"
    ABORTED = "aborted", "Aborted"
    CANCELLED = "cancelled", "Cancelled"


OPEN_TASK_STATES = (TaskState.SCHEDULED, TaskState.IN_PROGRESS)


class Message(models.Model):
    """One line of the seed's JSONL log; `msg_id` is the wire `id`."""

    # An integer primary key keeps insertion order (the log's order) and small indexes.
    seq = models.BigAutoField(primary_key=True)
    msg_id = models.CharField("id", max_length=40, unique=True, default=new_message_id, editable=False)
    ts = models.DateTimeField(default=timezone.now, db_index=True)
    sender = models.CharField("from", max_length=320)
    to = models.CharField(max_length=4000)
    type = models.CharField(max_length=16, choices=MessageType.choices)
    title = models.TextField(blank=True, default="")
    body = models.TextField(blank=True, default="")
    parent_id = models.CharField(max_length=40, null=True, blank=True, db_index=True)
    meta = models.JSONField(default=dict, blank=True)
    # Task-only columns (never on the wire except via meta).
    target_all = models.BooleanField(default=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    # Tasks only (blank on other messages): see TaskState; a paused rollout releases nothing.
    state = models.CharField(max_length=16, choices=TaskState.choices, blank=True, default="")
    paused_at = models.DateTimeField(null=True, blank=True)
    abort_reason = models.TextField(blank=True, default="")
    sent_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    device = models.ForeignKey(Device, null=True, blank=True, on_delete=models.SET_NULL, related_name="messages")
    # Not yet in the day log: the journal writer appends it from here (pool.services.journal_write_pending).
    journal_pending = models.BooleanField(default=False)

    class Meta:
        ordering = ["ts", "seq"]
        indexes = [
            models.Index(fields=["seq"], name="pool_msg_journal_pending", condition=Q(journal_pending=True)),
            # Lazy broadcast materialisation reads the live broadcasts newer than a watermark.
            models.Index(fields=["ts"], name="pool_msg_broadcast_ts", condition=Q(type="task", target_all=True)),
            models.Index(fields=["type", "ts"], name="pool_msg_type_ts"),
            # The rollout sweep and continuous targeting read only open tasks (few, in a huge log).
            models.Index(
                fields=["to"],
                name="pool_msg_open_task",
                condition=Q(type="task", state__in=["scheduled", "in_progress"]),
            ),
            # GET /pool/tasks?state=… newest first.
            models.Index(fields=["state", "seq"], name="pool_msg_task_state", condition=Q(type="task")),
        ]

    def __str__(self) -> str:
        return f"{self.msg_id} {self.type} {self.title[:40]}"

    def is_live(self, now: Any = None) -> bool:
        now = now or timezone.now()
        return self.cancelled_at is None and (self.expires_at is None or self.expires_at > now)

    @property
    def is_continuous(self) -> bool:
        """Devices may still join this task while it is open, so it never completes by itself: a
        `"continuous": true` task, and every broadcast (`device:*` reaches devices enrolled or
        validated later, the seed's rule). It ends by cancel, abort or its expiry."""
        return self.target_all or (isinstance(self.meta, dict) and self.meta.get("continuous") is True)


class Task(Message):
    """Proxy for the admin: messages of type `task`."""

    class Meta:
        proxy = True
        verbose_name = "task"


class DeliveryState(models.TextChoices):
    QUEUED = "queued", "Queued"  # a rollout's delivery not released yet: invisible to its device
    PENDING = "pending", "Pending"
    PROGRESS = "progress", "In progress"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"
    TIMED_OUT = "timed_out", "Timed out"
    CANCELLED = "cancelled", "Cancelled"


OPEN_STATES = (DeliveryState.PENDING, DeliveryState.PROGRESS)


class Delivery(models.Model):
    """One task as seen by one target device: pending until *that* device answers done/failed."""

    task = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="deliveries")
    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="deliveries")
    state = models.CharField(max_length=16, choices=DeliveryState.choices, default=DeliveryState.PENDING)
    progress = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    # When it last became pending for its device (a rollout's release), and how many times.
    released_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name_plural = "deliveries"
        constraints = [models.UniqueConstraint(fields=["task", "device"], name="pool_delivery_unique")]
        indexes = [
            # GET /pool/pending reads only this device's open rows: cost follows what is pending.
            models.Index(
                fields=["device", "task"], name="pool_delivery_open", condition=Q(state__in=["pending", "progress"])
            ),
            # The rollout sweep releases a task's queued rows in order and times out its open ones.
            models.Index(fields=["task", "id"], name="pool_delivery_queued", condition=Q(state="queued")),
            models.Index(
                fields=["task", "released_at"],
                name="pool_delivery_released",
                condition=Q(state__in=["pending", "progress"], released_at__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.task_id}→device:{self.device_id} {self.state}"
