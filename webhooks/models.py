"""Webhook subscriptions (a URL, the events it wants, its signing secret) and their deliveries."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class EventType(models.TextChoices):
    JOB_FINISHED = "job.finished", "job.finished"
    JOB_FAILED = "job.failed", "job.failed"
    RUN_FINISHED = "run.finished", "run.finished"
    DEVICE_TASK_FINISHED = "device_task.finished", "device_task.finished"
    ROLLOUT_ABORTED = "rollout.aborted", "rollout.aborted"
    ALERT_RAISED = "alert.raised", "alert.raised"
    ALERT_RESOLVED = "alert.resolved", "alert.resolved"


class Subscription(models.Model):
    """A URL that receives the chosen events, signed with its secret."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhooks")
    url = models.URLField(max_length=2000)
    events = models.JSONField(default=list, help_text="Event types sent to this URL.")
    # Only events about this user's work. A non-admin's subscription always has its owner here.
    event_owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    # The signing secret, encrypted (webhooks/sealing.py): needed in clear to sign each delivery,
    # so not a hash; never shown again after it was first given out.
    secret_sealed = models.TextField()
    enabled = models.BooleanField(default=True, db_index=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    disabled_reason = models.CharField(max_length=300, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        verbose_name = "webhook"

    def __str__(self) -> str:
        return f"webhook {self.pk} → {self.url[:80]}"


class Delivery(models.Model):
    """One event sent (or being sent) to one subscription, by a job; redelivering queues it again."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RETRYING = "retrying", "Failed, will retry"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"
        REFUSED = "refused", "Refused (address not allowed)"
        SKIPPED = "skipped", "Skipped (webhook disabled)"

    subscription = models.ForeignKey(Subscription, on_delete=models.CASCADE, related_name="deliveries")
    event_id = models.UUIDField(default=uuid.uuid4, db_index=True)
    event_type = models.CharField(max_length=40, choices=EventType.choices, db_index=True)
    payload = models.JSONField(help_text='The body sent: {"id", "type", "created_at", "data"}.')
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    response_code = models.PositiveSmallIntegerField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    job_id = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "deliveries"

    def __str__(self) -> str:
        return f"{self.event_type} → webhook {self.subscription_id}"
