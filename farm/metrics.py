"""The task farm's families for /metrics (coordinator/metrics.py): hand-outs, completions and
lapsed leases counted in the services; tasks still to do and live workers read at each scrape."""

from __future__ import annotations

from collections.abc import Iterator

from django.db.models import Count, F, Sum
from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from farm.models import Run, Task
from farm.selectors import workers_alive

claimed = Counter("coordinator_farm_tasks_claimed", "Farm tasks handed out to workers.")
finished = Counter("coordinator_farm_tasks_finished", "Farm tasks reported finished, by status.", ["status"])
leases_expired = Counter(
    "coordinator_farm_leases_expired", "Farm tasks whose worker went silent past the lease (taken back)."
)


def tasks_claimed(count: int) -> None:
    """Count tasks handed out."""
    claimed.inc(count)


def tasks_finished(status: str, count: int) -> None:
    """Count tasks a worker reported done or failed."""
    finished.labels(status).inc(count)


def leases_lapsed(count: int) -> None:
    """Count computing tasks taken back after their lease lapsed (by hand-out or the sweep)."""
    leases_expired.inc(count)


class FarmCollector:
    """Tasks waiting and computing across runs, and live workers. Only the rows hand-out reads are
    counted (partial indexes on waiting and computing); numbers no worker touched yet are the
    runs' `num_tasks - next_task`. Done and failed grow without bound: they are the counter above."""

    def collect(self) -> Iterator[Metric]:
        tasks = GaugeMetricFamily(
            "coordinator_farm_tasks", "Farm tasks still to finish, across runs, by status.", labels=["status"]
        )
        rows = dict(
            Task.objects.filter(status__in=[Task.Status.WAITING, Task.Status.COMPUTING])
            .order_by()
            .values_list("status")
            .annotate(n=Count("id"))
        )
        untouched = Run.objects.aggregate(n=Sum(F("num_tasks") - F("next_task")))["n"] or 0
        tasks.add_metric([Task.Status.WAITING], rows.get(Task.Status.WAITING, 0) + untouched)
        tasks.add_metric([Task.Status.COMPUTING], rows.get(Task.Status.COMPUTING, 0))
        yield tasks
        yield GaugeMetricFamily(
            "coordinator_farm_workers_active", "Farm workers seen within the lease.", value=workers_alive().count()
        )
