"""The device pool's panel of the operations dashboard (coordinator/admin_site.py): the values
recorded each minute, the charts drawn from them, and what needs attention. Reads only."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import Count, Exists, OuterRef, Q
from django.urls import reverse
from django.utils import timezone

from pool import conf
from pool.models import OPEN_STATES, Delivery, Device, Message, MessageType

CHARTS = [
    {"title": "Device messages per minute", "series": {"pool.responses": "responses", "pool.heartbeats": "heartbeats"}},
    {"title": "Devices", "series": {"pool.online": "online", "pool.open": "open deliveries"}},
]


def minute(start: datetime, end: datetime) -> dict[str, float | None]:
    """Answers and heartbeats of the minute (the message log's (type, ts) index), devices online
    and open deliveries now (the open deliveries' partial index)."""
    sent = dict(
        Message.objects.filter(type__in=[MessageType.RESPONSE, MessageType.HEARTBEAT], ts__gte=start, ts__lt=end)
        .order_by()
        .values_list("type")
        .annotate(n=Count("seq"))
    )
    online = Device.objects.filter(enabled=True, last_heartbeat_at__gte=timezone.now() - conf.online_threshold())
    return {
        "pool.responses": sent.get(MessageType.RESPONSE, 0),
        "pool.heartbeats": sent.get(MessageType.HEARTBEAT, 0),
        "pool.online": online.count(),
        "pool.open": Delivery.objects.filter(state__in=OPEN_STATES).count(),
    }


def offline_with_open_deliveries(now: datetime | None = None) -> int:
    """Enabled devices without a recent heartbeat that still have deliveries to answer."""
    since = (now or timezone.now()) - conf.online_threshold()
    waiting = Delivery.objects.filter(device=OuterRef("pk"), state__in=OPEN_STATES)
    silent = Q(last_heartbeat_at__isnull=True) | Q(last_heartbeat_at__lt=since)
    return Device.objects.filter(silent, enabled=True).filter(Exists(waiting)).count()


def attention(now: datetime | None = None) -> list[dict[str, Any]]:
    """Devices offline while deliveries wait for them."""
    return [
        {
            "title": "Devices offline with open deliveries",
            "count": offline_with_open_deliveries(now),
            "url": reverse("admin:pool_device_changelist") + "?enabled__exact=1",
        }
    ]
