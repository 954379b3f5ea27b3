"""Progress events (with increasing ids, for replay) and the latest state of every topic."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Kind(models.TextChoices):
    NEW = "new", "new"
    MSG = "msg", "msg"
    END = "end", "end"


class ProgressEvent(models.Model):
    """One published event; ids increase, rows older than the retention window are pruned."""

    topic = models.CharField(max_length=200)
    kind = models.CharField(max_length=3, choices=Kind.choices)
    text = models.TextField(blank=True, default="")
    state = models.JSONField(default=dict, blank=True)
    owner_id = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["topic", "id"], name="progress_event_topic_id")]

    def __str__(self) -> str:
        return f"#{self.pk} {self.topic} {self.kind}"


class ProgressTopic(models.Model):
    """The latest state of one topic, so that a client joining late sees what is running."""

    topic = models.CharField(max_length=200, unique=True)
    name = models.CharField(max_length=200, blank=True, default="")
    text = models.TextField(blank=True, default="")
    error = models.TextField(blank=True, default="")
    state = models.JSONField(default=dict, blank=True)
    owner_id = models.BigIntegerField(null=True, blank=True)
    last_kind = models.CharField(max_length=3, choices=Kind.choices, default=Kind.NEW)
    last_event_id = models.BigIntegerField(default=0)
    started_at = models.DateTimeField()
    updated_at = models.DateTimeField(db_index=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = [models.F("ended_at").asc(nulls_first=True), "-updated_at"]
        verbose_name = "live stream"
        verbose_name_plural = "live streams"

    def __str__(self) -> str:
        return self.name or self.topic

    @property
    def is_live(self) -> bool:
        return self.ended_at is None


class StreamLease(models.Model):
    """One open SSE stream or WebSocket of a user, in whichever ASGI process holds it.

    The per-user cap holds across processes because a stream must own one of the user's numbered
    slots (unique per user) to stay open; the holder renews the lease on its keep-alive, so a slot
    of a process that died comes back once its lease expires.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    slot = models.PositiveSmallIntegerField()
    expires_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "slot"], name="progress_stream_lease_user_slot")]

    def __str__(self) -> str:
        return f"user {self.user_id} slot {self.slot}"
