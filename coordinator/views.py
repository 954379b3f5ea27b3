"""The platform's own pages outside the admin and the API."""

from __future__ import annotations

from typing import Any

from django.views.generic import TemplateView


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
