"""The task farm's panel of the operations dashboard (coordinator/admin_site.py): the values
recorded each minute, the charts drawn from them, and what needs attention. Reads only."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db.models import Sum
from django.urls import reverse

from coordinator.models import MetricMinute
from farm.models import Task, Worker
from farm.selectors import tasks_past_lease, workers_alive

CHARTS = [
    {"title": "Farm tasks finished per minute", "series": {"farm.done": "done", "farm.failed": "failed"}},
    {"title": "Farm task latency (s)", "series": {"farm.latency_mean": "hand-out to done, mean"}},
    {"title": "Farm tasks computing", "series": {"farm.computing": "computing", "farm.past_lease": "past lease"}},
]

# The workers' running totals (farm.models.Worker) recorded each minute, and the per-minute series
# drawn from their growth over the minute.
_TOTALS = {
    "farm.done_total": "tasks_done",
    "farm.failed_total": "tasks_failed",
    "farm.done_seconds_total": "done_seconds",
}


def minute(start: datetime, end: datetime) -> dict[str, float | None]:
    """Tasks done and failed in the minute and their mean hand-out-to-done seconds (the workers'
    running totals, a small table the finishing update keeps, against the totals recorded a
    minute before), tasks computing and past their lease, live workers."""
    sums = Worker.objects.aggregate(**{series: Sum(column) for series, column in _TOTALS.items()})
    totals = {series: float(sums[series] or 0) for series in _TOTALS}
    before = dict(
        MetricMinute.objects.filter(
            series__in=list(_TOTALS), minute=int((start - timedelta(minutes=1)).timestamp())
        ).values_list("series", "value")
    )
    # A deleted worker takes its totals with it: never a negative rate.
    grown = {series: max(0.0, totals[series] - before[series]) if series in before else None for series in _TOTALS}
    done, seconds = grown["farm.done_total"], grown["farm.done_seconds_total"]
    return {
        **totals,
        "farm.done": done,
        "farm.failed": grown["farm.failed_total"],
        "farm.latency_mean": seconds / done if done and seconds is not None else None,
        "farm.computing": Task.objects.filter(status=Task.Status.COMPUTING).count(),
        "farm.past_lease": tasks_past_lease().count(),
        "farm.workers": workers_alive().count(),
    }


def attention(now: datetime | None = None) -> list[dict[str, Any]]:
    """Computing tasks whose worker went silent past the lease."""
    url = reverse("admin:farm_task_changelist")
    return [
        {
            "title": "Farm tasks past their lease",
            "count": tasks_past_lease(now).count(),
            "url": f"{url}?stuck=past_lease",
        }
    ]
