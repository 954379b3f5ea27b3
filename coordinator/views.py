"""The platform's own pages outside the admin and the API."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.views import View
from django.views.generic import TemplateView
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from coordinator.metrics import metrics_access, metrics_text


class LandingView(TemplateView):
    """`/` and the admin's "View site": what the platform runs, and where to go."""

    template_name = "coordinator/landing.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["parts"] = [
            (
                "pool",
                "Device pool",
                "Tasks for a fleet of devices: pending work, responses, heartbeats, a day log.",
                "/pool/",
            ),
            (
                "farm",
                "Task farm",
                "Runs of numbered tasks handed out to independent workers (taskfarm-worker).",
                "/api/",
            ),
            ("jobs", "Background jobs", "Typed jobs on django-q2: statuses, retries, exports to download.", "/v1/"),
            (
                "progress",
                "Live progress",
                "Progress reported on a UNIX socket, shown live over SSE and WebSockets.",
                "/progress/events",
            ),
        ]
        return context


class MetricsView(View):
    """`GET /metrics`: the Prometheus text format, for a scraper holding METRICS_TOKEN or calling
    from METRICS_ALLOWED_ADDRESSES (neither configured: refused to everyone)."""

    http_method_names = ["get"]

    def get(self, request: HttpRequest) -> HttpResponse:
        refusal = metrics_access(request)
        if refusal == 401:
            response = HttpResponse("A bearer token is required.\n", status=401, content_type="text/plain")
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
        if refusal is not None:
            return HttpResponse("Metrics are not served to this address.\n", status=403, content_type="text/plain")
        response = HttpResponse(metrics_text(), content_type=CONTENT_TYPE_LATEST)
        response["Cache-Control"] = "no-store"
        return response
