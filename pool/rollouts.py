"""Staged rollouts: the periodic step that releases, times out, retries, aborts and completes a
rollout's deliveries, and expires tasks past their expiry (run by the django-q2 cluster every
minute; the policy is pool.policy)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from pool import metrics
from pool.models import OPEN_STATES, OPEN_TASK_STATES, Delivery, DeliveryState, Message, MessageType, TaskState
from pool.policy import rollout_policy_parse
from pool.selectors import task_state_counts
from pool.services import push_devices, task_decision_record, task_expire, tasks_expire_due

# Released deliveries are counted over a sliding minute: in any 60 s at most `rate` are released,
# however often the step runs (every cluster runs it each minute; tests run it at will).
RATE_WINDOW = timedelta(minutes=1)


def open_rollouts() -> list[int]:
    """Ids of the rollouts that may still need a decision (open, not cancelled)."""
    return list(
        Message.objects.filter(
            type=MessageType.TASK, state__in=OPEN_TASK_STATES, cancelled_at=None, meta__has_key="rollout"
        ).values_list("pk", flat=True)
    )


@dataclass
class Step:
    """What one step decided for one rollout."""

    released: int = 0
    timed_out: int = 0
    retried: int = 0
    rate: int = 0
    aborted: str = ""
    completed: bool = False

    def changed(self) -> bool:
        return bool(self.released or self.timed_out or self.retried or self.aborted or self.completed)

    def text(self) -> str:
        parts = []
        if self.timed_out:
            parts.append(f"{self.timed_out} timed out")
        if self.retried:
            parts.append(f"{self.retried} queued again to retry")
        if self.released:
            parts.append(f"released {self.released} (rate {self.rate}/min)")
        if self.aborted:
            parts.append(f"aborted: {self.aborted}")
        if self.completed:
            parts.append("completed")
        return "rollout: " + "; ".join(parts)


def rollout_step(*, task_id: int, now: datetime | None = None) -> Step | None:
    """Decide one rollout at `now`: time out, retry, abort, release at the rate, complete. None when
    another cluster holds it or it is no longer open."""
    now = now or timezone.now()
    with transaction.atomic():
        # The task row is the rollout's lock: a second cluster stepping at the same moment skips
        # it (PostgreSQL) or waits its turn (SQLite's IMMEDIATE transactions), so the sliding-minute
        # count it reads includes the first cluster's releases, and no rate is exceeded.
        task = (
            Message.objects.select_for_update(skip_locked=True)
            .filter(pk=task_id, type=MessageType.TASK, state__in=OPEN_TASK_STATES, cancelled_at=None)
            .first()
        )
        if task is None or not isinstance(task.meta, dict) or "rollout" not in task.meta:
            return None
        if task.expires_at is not None and task.expires_at <= now:
            task_expire(task=task, now=now)  # nothing is released past the expiry
            return None
        policy = rollout_policy_parse(task.meta["rollout"])
        rows = Delivery.objects.filter(task=task)
        step = Step()
        if policy.in_progress_timeout is not None:
            # Guarded by state: a device's answer committing meanwhile keeps its row (and its answer).
            step.timed_out = rows.filter(
                state__in=OPEN_STATES, released_at__lt=now - policy.in_progress_timeout
            ).update(state=DeliveryState.TIMED_OUT, updated_at=now)
        if policy.retries is not None and policy.retries.max:
            step.retried = rows.filter(state__in=policy.retries.on, attempts__lte=policy.retries.max).update(
                state=DeliveryState.QUEUED, updated_at=now
            )
        counts = task_state_counts(task=task)
        finished = counts["done"] + counts["failed"] + counts["timed_out"]
        bad = counts["failed"] + counts["timed_out"]
        abort = policy.abort
        if abort is not None and finished >= abort.min_finished and bad * 100 >= abort.failed_percent * finished:
            step.aborted = (
                f"{bad} of {finished} finished deliveries failed or timed out "
                f"({100 * bad / finished:.1f}% ≥ {abort.failed_percent:g}%)"
            )
            rows.filter(state=DeliveryState.QUEUED).update(state=DeliveryState.CANCELLED, updated_at=now)
            task.state, task.abort_reason = TaskState.ABORTED, step.aborted
            Message.objects.filter(pk=task.pk).update(state=task.state, abort_reason=task.abort_reason)
        elif task.paused_at is None and policy.in_window(now):
            step.rate = policy.rate(counts["done"])
            recent = rows.filter(released_at__gt=now - RATE_WINDOW, released_at__lte=now).count()
            budget = step.rate - recent
            if budget > 0 and counts["queued"]:
                chosen = list(
                    rows.filter(state=DeliveryState.QUEUED).order_by("id").values_list("pk", "device_id")[:budget]
                )
                # Guarded: only rows still queued are released, and each release counts an attempt.
                step.released = Delivery.objects.filter(
                    pk__in=[pk for pk, _ in chosen], state=DeliveryState.QUEUED
                ).update(state=DeliveryState.PENDING, released_at=now, attempts=F("attempts") + 1, updated_at=now)
                push_devices(device_ids=[device_id for _, device_id in chosen])
                if task.state == TaskState.SCHEDULED:
                    task.state = TaskState.IN_PROGRESS
                    Message.objects.filter(pk=task.pk).update(state=task.state)
        if not step.aborted:
            left = rows.filter(state__in=[DeliveryState.QUEUED, *OPEN_STATES]).exists()
            if not left and not task.is_continuous:
                step.completed = True
                task.state = TaskState.COMPLETED
                Message.objects.filter(pk=task.pk).update(state=task.state)
        if step.changed():
            kind: Literal["msg", "end"] = "end" if step.aborted or step.completed else "msg"
            task_decision_record(task, kind=kind, text=step.text(), state=_step_state(step), now=now)
        return step


def _step_state(step: Step) -> dict[str, Any]:
    return {
        "released": step.released,
        "timed_out": step.timed_out,
        "retried": step.retried,
        "rate": step.rate,
        "aborted": step.aborted,
        "completed": step.completed,
    }


def rollouts_advance(*, now: datetime | None = None) -> dict[str, int]:
    """One pass of the cluster's periodic job: expire the tasks past their expiry, then step every
    open rollout; totals of what it decided."""
    now = now or timezone.now()
    totals = {"rollouts": 0, "released": 0, "timed_out": 0, "retried": 0, "aborted": 0, "completed": 0}
    totals["expired"] = tasks_expire_due(now=now)
    for task_id in open_rollouts():
        step = rollout_step(task_id=task_id, now=now)
        if step is None:
            continue
        totals["rollouts"] += 1
        totals["released"] += step.released
        totals["timed_out"] += step.timed_out
        totals["retried"] += step.retried
        totals["aborted"] += int(bool(step.aborted))
        totals["completed"] += int(step.completed)
    metrics.rollout_decided(totals)
    return totals
