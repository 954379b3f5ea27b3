from __future__ import annotations

from typing import Any

from django.apps import AppConfig


class FarmConfig(AppConfig):
    verbose_name = "Task farm"
    name = "farm"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the Basic auth scheme with drf-spectacular.
        from farm import authentication  # noqa: F401

    def admin_dashboard(self, request: Any) -> list[dict[str, Any]]:
        """Cards on the admin index: runs and the tasks being computed right now."""
        from django.urls import reverse

        from farm.models import Run, Task

        return [
            {"title": "Farm runs", "value": Run.objects.count(), "url": reverse("admin:farm_run_changelist"),
             "note": "task farm runs of all users"},
            {"title": "Farm tasks computing", "value": Task.objects.filter(status=Task.Status.COMPUTING).count(),
             "url": reverse("admin:farm_task_changelist") + "?status__exact=computing",
             "note": "handed out, not finished"},
        ]
