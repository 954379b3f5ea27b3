"""Live progress's families for /metrics (coordinator/metrics.py): open SSE and WebSocket clients
(each ASGI process's own, summed over the live ones), events stored and handed to readers, and
socket streams running (read at each scrape)."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import Counter, Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from progress.models import ProgressTopic

clients = Gauge(
    "coordinator_progress_clients",
    "Open live readers, by transport (sse, websocket).",
    ["transport"],
    multiprocess_mode="livesum",
)
stored = Counter("coordinator_progress_events_stored", "Progress events stored, by kind.", ["kind"])
delivered = Counter("coordinator_progress_events_delivered", "Progress events handed to a live reader.")


def events_stored(pending: Iterable[dict[str, Any]]) -> None:
    """Count a batch of stored events by kind (new, msg, end)."""
    for kind, count in Tally(str(p["kind"]) for p in pending).items():
        stored.labels(kind).inc(count)


class ProgressCollector:
    """Socket streams running now: live `stream:` topics."""

    def collect(self) -> Iterator[Metric]:
        running = ProgressTopic.objects.filter(ended_at__isnull=True, topic__startswith="stream:").count()
        yield GaugeMetricFamily(
            "coordinator_progress_socket_streams", "Programs reporting on the progress socket now.", value=running
        )
