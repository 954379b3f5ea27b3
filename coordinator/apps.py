from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps
from django.db.models.signals import post_migrate
from django.utils import timezone

# The django-q2 schedule that records the operations dashboard's minute values.
OPERATIONS_MINUTE = "coordinator: dashboard minute"


def _schedule_operations_minute(using: str = "default", **kwargs: Any) -> None:
    """Every minute the django-q2 cluster records the dashboard's values of the minute that just
    ended (coordinator.services.operations_record); editable in the admin like every schedule."""
    from coordinator.services import schedule_every_minute

    schedule_every_minute(name=OPERATIONS_MINUTE, func="coordinator.services.operations_record", using=using)


class CoordinatorConfig(AppConfig):
    default = True
    name = "coordinator"
    verbose_name = "Users and platform"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        post_migrate.connect(_schedule_operations_minute, sender=self, dispatch_uid="coordinator.operations_minute")


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
