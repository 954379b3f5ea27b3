"""Live progress's panel of the operations dashboard (coordinator/admin_site.py), and the live
channel the dashboard follows: the minute's values are published on DASHBOARD_TOPIC."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.urls import reverse

from progress.models import ProgressEvent, ProgressTopic
from progress.selectors import alert_list_open
from progress.services import progress_publish

# Admins' dashboards subscribe to it (owner None: admins only, like every system topic).
DASHBOARD_TOPIC = "ops:dashboard"

CHARTS = [{"title": "Progress events per minute", "series": {"progress.events": "events"}}]


def minute(start: datetime, end: datetime) -> dict[str, float | None]:
    """Events stored in the minute (their created_at index) and topics running now."""
    return {
        "progress.events": ProgressEvent.objects.filter(created_at__gte=start, created_at__lt=end).count(),
        "progress.live": ProgressTopic.objects.filter(ended_at__isnull=True).count(),
    }


def attention(now: datetime | None = None) -> list[dict[str, Any]]:
    """The silence watchdog's open alerts (silent streams, offline devices, stalled runs, long jobs)."""
    url = reverse("admin:progress_alert_changelist")
    return [{"title": "Open watchdog alerts", "count": alert_list_open().count(), "url": f"{url}?open=yes"}]


def broadcast(state: dict[str, Any]) -> None:
    """Hand a minute's values to every open dashboard."""
    # `end`: the topic is no stream that runs (the Live page and its count leave it out).
    progress_publish(topic=DASHBOARD_TOPIC, kind="end", text="", state=state)
