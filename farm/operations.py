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
    {"title": "Farm tasks done per minute", "series": {"farm.done": "done"}},
    {"title": "Farm tasks computing", "series": {"farm.computing": "computing", "farm.past_lease": "past lease"}},
]
LIVE_CARDS = {
    "Farm tasks computing": "farm.computing",
    "Farm workers alive": "farm.workers",
    "Farm tasks past their lease": "farm.past_lease",
}


def minute(start: datetime, end: datetime) -> dict[str, float | None]:
    """Tasks done in the minute (the workers' running totals, a small table, against the total
    recorded a minute before), tasks computing and past their lease, live workers."""
    total = float(Worker.objects.aggregate(n=Sum("tasks_done"))["n"] or 0)
    before = (
        MetricMinute.objects.filter(series="farm.done_total", minute=int((start - timedelta(minutes=1)).timestamp()))
        .values_list("value", flat=True)
        .first()
    )
    return {
        "farm.done_total": total,
        # A deleted worker takes its total with it: never a negative rate.
        "farm.done": max(0.0, total - before) if before is not None else None,
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
