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
        # The watchdog's reads: live topics by the time of their last event, or of their start.
        indexes = [
            models.Index(fields=["ended_at", "updated_at"], name="progress_topic_live_updated"),
            models.Index(fields=["ended_at", "started_at"], name="progress_topic_live_started"),
        ]
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


class WatchRule(models.Model):
    """A silence rule over topics by pattern (`run:*`, `job:*`, `pooldevice:*`, `stream:*`): it
    raises an alert for each live topic that meets it, resolved when the topic no longer does."""

    class Kind(models.TextChoices):
        SILENT = "silent", "No event for N minutes"
        STALLED = "stalled", "Value not moving for N minutes while busy"
        RUNNING = "running", "Running longer than N minutes"
        RUNNING_P95 = "running_p95", "Running longer than the usual p95 of its name"

    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    pattern = models.CharField(
        max_length=200, help_text="A topic, or a prefix ending in `*`: `job:*`, `run:*`, `pooldevice:*`, `stream:*`."
    )
    minutes = models.PositiveIntegerField(
        default=10, help_text="N minutes (for the p95 rule: the least running time that may raise an alert)."
    )
    value_field = models.CharField(
        max_length=100, blank=True, default="percentDone", help_text="Stalled rule: the state field that must move."
    )
    busy_field = models.CharField(
        max_length=100,
        blank=True,
        default="numComputing",
        help_text="Stalled rule: the state field that must be above 0 (work in progress).",
    )
    only_if = models.CharField(
        max_length=100,
        blank=True,
        default="",
        help_text="Only topics an app's condition holds for, e.g. `open_deliveries` (devices with open deliveries).",
    )
    enabled = models.BooleanField(default=True)
    last_swept_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "watchdog rule"

    def __str__(self) -> str:
        return self.name

    @property
    def prefix(self) -> str:
        return self.pattern[:-1] if self.pattern.endswith("*") else self.pattern


class Alert(models.Model):
    """Something that needs attention: raised by a watchdog rule (resolved by itself when its
    condition clears) or by an app (a webhook disabled after failures), shown as `alert:<id>`."""

    rule = models.ForeignKey(WatchRule, null=True, blank=True, on_delete=models.SET_NULL, related_name="alerts")
    # One open alert per key: `rule:<id>:<topic>`, or an app's own (`webhook:<id>`).
    key = models.CharField(max_length=300)
    topic = models.CharField(max_length=200, blank=True, default="", help_text="What it is about.")
    message = models.CharField(max_length=500)
    owner_id = models.BigIntegerField(null=True, blank=True)
    raised_at = models.DateTimeField(db_index=True)
    resolved_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        ordering = [models.F("resolved_at").desc(nulls_first=True), "-raised_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["key"], condition=models.Q(resolved_at__isnull=True), name="progress_alert_one_open_per_key"
            )
        ]

    def __str__(self) -> str:
        return self.message

    @property
    def progress_topic(self) -> str:
        return f"alert:{self.pk}"


class WatchMark(models.Model):
    """A stalled rule's memory: the value a topic had, and since when."""

    rule = models.ForeignKey(WatchRule, on_delete=models.CASCADE, related_name="marks")
    topic = models.CharField(max_length=200)
    value = models.JSONField(null=True)
    since = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["rule", "topic"], name="progress_watchmark_unique")]

    def __str__(self) -> str:
        return f"{self.topic} at {self.value} since {self.since:%H:%M}"


class DurationSample(models.Model):
    """Recent running times of ended topics by prefix and name (a job type), for p95 rules."""

    key = models.CharField(max_length=300, unique=True)
    seconds = models.JSONField(default=list)

    def __str__(self) -> str:
        return self.key
