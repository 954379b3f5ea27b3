"""The device pool's families for /metrics (coordinator/metrics.py): answers counted in the
services; devices, open deliveries and heartbeat ages read at each scrape."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, Sum, Value
from django.utils import timezone
from prometheus_client import Counter
from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from pool import conf
from pool.models import OPEN_STATES, OPEN_TASK_STATES, Delivery, DeliveryState, Device, Message, MessageType, TaskState

responses = Counter("coordinator_pool_responses", "Device answers to tasks, by status.", ["status"])
rollout_decisions = Counter(
    "coordinator_pool_rollout_decisions",
    "What the periodic sweep decided: deliveries released, timed out and retried; rollouts aborted and "
    "completed; tasks expired.",
    ["decision"],
)
ROLLOUT_DECISIONS = ("released", "timed_out", "retried", "aborted", "completed", "expired")

# Seconds since a device's last heartbeat.
HEARTBEAT_AGE_BUCKETS = (10, 30, 60, 120, 300, 900, 3600, 6 * 3600, 24 * 3600)


def rollout_decided(totals: dict[str, int]) -> None:
    """Count one sweep's rollout decisions (pool.rollouts.rollouts_advance)."""
    for decision in ROLLOUT_DECISIONS:
        if totals.get(decision):
            rollout_decisions.labels(decision).inc(totals[decision])


def response_counted(status: str) -> None:
    """Count a device's answer (progress, done, failed)."""
    responses.labels(status).inc()


class PoolCollector:
    """Enabled devices online and offline, open deliveries by state (their partial index only:
    closed ones grow without bound and are the response counter), heartbeat ages."""

    def collect(self) -> Iterator[Metric]:
        now = timezone.now()
        online_since = now - conf.online_threshold()
        ages = {
            f"b{seconds}": Count("id", filter=Q(last_heartbeat_at__gte=now - timedelta(seconds=seconds)))
            for seconds in HEARTBEAT_AGE_BUCKETS
        }
        beat = Q(last_heartbeat_at__isnull=False)
        age = ExpressionWrapper(Value(now) - F("last_heartbeat_at"), output_field=DurationField())
        found = Device.objects.filter(enabled=True).aggregate(
            total=Count("id"),
            online=Count("id", filter=Q(last_heartbeat_at__gte=online_since)),
            beating=Count("id", filter=beat),
            age_sum=Sum(age, filter=beat),
            **ages,
        )
        devices = GaugeMetricFamily(
            "coordinator_pool_devices", "Enabled devices, online (recent heartbeat) or offline.", labels=["state"]
        )
        devices.add_metric(["online"], found["online"])
        devices.add_metric(["offline"], found["total"] - found["online"])
        yield devices
        buckets = [(str(float(seconds)), float(found[f"b{seconds}"])) for seconds in HEARTBEAT_AGE_BUCKETS]
        buckets.append(("+Inf", float(found["beating"])))
        yield GaugeHistogramMetricFamily(
            "coordinator_pool_heartbeat_age_seconds",
            "Enabled devices that ever sent a heartbeat, by the age of their last one.",
            buckets=buckets,
            gsum_value=found["age_sum"].total_seconds() if found["age_sum"] is not None else 0.0,
        )
        deliveries = GaugeMetricFamily(
            "coordinator_pool_deliveries_open",
            "Deliveries (task x device) not yet answered, by state.",
            labels=["state"],
        )
        rows = dict(
            Delivery.objects.filter(state__in=OPEN_STATES).order_by().values_list("state").annotate(n=Count("id"))
        )
        for state in OPEN_STATES:
            deliveries.add_metric([state.value], rows.get(state.value, 0))
        yield deliveries
        # Open rollouts only (the partial index on open tasks): finished ones are the decisions counter.
        rollouts = GaugeMetricFamily(
            "coordinator_pool_rollouts_open", "Staged rollouts not yet finished, by state.", labels=["state"]
        )
        found = Message.objects.filter(
            type=MessageType.TASK, state__in=OPEN_TASK_STATES, cancelled_at=None, meta__has_key="rollout"
        ).aggregate(
            scheduled=Count("seq", filter=Q(state=TaskState.SCHEDULED, paused_at=None)),
            in_progress=Count("seq", filter=Q(state=TaskState.IN_PROGRESS, paused_at=None)),
            paused=Count("seq", filter=Q(paused_at__isnull=False)),
        )
        for rollout_state in ("scheduled", "in_progress", "paused"):
            rollouts.add_metric([rollout_state], found[rollout_state])
        yield rollouts
        yield GaugeMetricFamily(
            "coordinator_pool_deliveries_queued",
            "Deliveries of staged rollouts waiting for their release.",
            value=Delivery.objects.filter(state=DeliveryState.QUEUED).count(),
        )
