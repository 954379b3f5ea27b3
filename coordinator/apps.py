from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps
from django.utils import timezone


class CoordinatorConfig(AppConfig):
    default = True
    name = "coordinator"
    verbose_name = "Users and platform"
    default_auto_field = "django.db.models.BigAutoField"


class CoordinatorAdminConfig(admin_apps.AdminConfig):
    """The Django admin with the platform's own site (branding and a dashboard index)."""

    default = False
    default_site = "coordinator.admin_site.CoordinatorAdminSite"

    def admin_dashboard(self, request: Any) -> list[dict[str, Any]]:
        """Under `serve`: how often its processes died and were started again."""
        from django.urls import reverse

        from coordinator.selectors import process_restarts

        restarts = process_restarts()
        if not restarts:
            return []
        total = sum(int(record["restarts"]) for record in restarts.values())
        last_name, last = max(restarts.items(), key=lambda item: float(item[1]["last_exit_at"] or 0))
        when = datetime.fromtimestamp(float(last["last_exit_at"] or 0), tz=UTC)
        return [
            {
                "title": "Process restarts",
                "value": total,
                "url": reverse("healthz"),
                "note": ", ".join(f"{name} {record['restarts']}" for name, record in sorted(restarts.items()))
                + f"; last: {last_name} {last['last_exit']} at {timezone.localtime(when):%H:%M:%S}",
            }
        ]
