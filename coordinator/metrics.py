"""The platform's metrics for Prometheus: the one registry every app adds to, and what `/metrics` serves.

Counters and histograms are prometheus-client metrics, declared at import in each app's
`metrics.py` and counted where the work happens (the services). Under `serve` every process writes
its values into files under PROMETHEUS_MULTIPROC_DIR and a scrape merges them (prometheus-client's
multiprocess mode), so the web workers, daphne and the job cluster all count. State kept in the
database (queue depth, devices online, tasks by status) is read when scraped, by collectors each
app registers in its `AppConfig.ready` with `register_collector`, with bounded, indexed queries.

Labels never hold ids: routes by name, job types, statuses, so that a series' count stays bounded.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol

from django.conf import settings
from django.http import HttpRequest
from prometheus_client import REGISTRY, Counter, Histogram, disable_created_metrics
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from rest_framework.throttling import BaseThrottle

logger = logging.getLogger(__name__)

# `_created` series double every family and mean nothing across processes (multiprocess mode drops them).
disable_created_metrics()

# Seconds; from a cached admin list to an export written in one request.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Seconds; background work, from a quick job to an hour-long export.
WORK_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)

http_requests = Counter(
    "coordinator_http_requests",
    "HTTP requests answered, by route name, method and status code.",
    ["route", "method", "status"],
)
http_request_duration = Histogram(
    "coordinator_http_request_duration_seconds",
    "Time from a request's arrival in Django to its answer (headers, for a stream), by route name.",
    ["route"],
    buckets=LATENCY_BUCKETS,
)

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def http_route(request: HttpRequest) -> str:
    """A request's route label: the URL's name (`admin:jobs_job_changelist`), never its path."""
    match = getattr(request, "resolver_match", None)
    if match is not None:
        return str(match.view_name or match.route or "unnamed")
    if request.path.startswith("/" + settings.STATIC_URL.lstrip("/")):
        return "static"
    return "unmatched"


def http_observe(request: HttpRequest, status: int, seconds: float) -> None:
    """Count one answered request."""
    route = http_route(request)
    method = request.method if request.method in _METHODS else "other"
    http_requests.labels(route, method, str(status)).inc()
    http_request_duration.labels(route).observe(seconds)


class Collector(Protocol):
    def collect(self) -> Iterable[Metric]: ...


_collectors: list[Collector] = []


def register_collector(collector: Collector) -> None:
    """Add a collector read at every scrape (state in the database); each app calls it in `ready()`."""
    if not any(type(existing) is type(collector) for existing in _collectors):
        _collectors.append(collector)


class _Scrape:
    """What one scrape reads: the counted values (this process's, or every process's files) and
    the state collectors. A collector that fails is logged and left out, not the whole answer."""

    def __init__(self, source: Collector) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        yield from self.source.collect()
        for collector in _collectors:
            try:
                metrics = list(collector.collect())
            except Exception:
                logger.exception("Metrics collector %s failed", type(collector).__name__)
                continue
            yield from metrics


_LIVE_FILE = re.compile(r"^gauge_live\w*_(\d+)\.db$")


def _forget_dead_processes(directory: Path) -> None:
    """Live gauges (open streams) of processes that died are dropped, as prometheus-client asks its
    servers to do when a worker exits; granian and daphne have no such hook, so it is done here."""
    for name in os.listdir(directory):
        found = _LIVE_FILE.match(name)
        if found is None:
            continue
        pid = int(found.group(1))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            mark_process_dead(pid, str(directory))
        except PermissionError:  # alive, another user's
            continue


def metrics_text() -> bytes:
    """The Prometheus text of every family, from every process of this instance."""
    directory = settings.METRICS_MULTIPROC_DIR
    if directory is not None and Path(directory).is_dir():
        _forget_dead_processes(Path(directory))
        source: Collector = MultiProcessCollector(None, path=str(directory))
    else:
        source = REGISTRY
    return generate_latest(_Scrape(source))  # type: ignore[arg-type]


def metrics_access(request: HttpRequest) -> int | None:
    """None when the caller may scrape; else the status to refuse with (401: a token is expected)."""
    token = settings.METRICS_TOKEN
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
            return None
    if settings.METRICS_ALLOWED_ADDRESSES:
        # The address the nearest trusted proxy saw, as the rate limits count it (TRUSTED_PROXY_COUNT).
        ident = BaseThrottle().get_ident(request)  # type: ignore[arg-type]
        try:
            address = ipaddress.ip_address(ident.strip())
        except ValueError:
            address = None
        if address is not None and any(
            address in ipaddress.ip_network(allowed, strict=False) for allowed in settings.METRICS_ALLOWED_ADDRESSES
        ):
            return None
    return 401 if token else 403
