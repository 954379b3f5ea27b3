"""The baseline of `bench.metrics_cost`: the platform's settings with its metrics taken out (the
HTTP middleware removed, every counter, gauge and histogram call a no-op). Benchmarks only."""

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from coordinator.settings import *  # noqa: F403
from coordinator.settings import MIDDLEWARE

MIDDLEWARE = [name for name in MIDDLEWARE if name != "coordinator.middleware.HttpMetricsMiddleware"]


def _nothing(self: object, *args: object, **kwargs: object) -> None:
    return None


def _itself(self: MetricWrapperBase, *args: object, **kwargs: object) -> MetricWrapperBase:
    return self


MetricWrapperBase.labels = _itself  # type: ignore[method-assign]
Counter.inc = _nothing  # type: ignore[method-assign]
Gauge.inc = Gauge.dec = _nothing  # type: ignore[method-assign]
Histogram.observe = _nothing  # type: ignore[method-assign]
