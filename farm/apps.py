from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate

LEASE_SWEEP = "farm: return expired leases to waiting"


def _schedule_lease_sweep(using: str = "default", **kwargs: Any) -> None:
    """Every minute the django-q2 cluster (run by `manage.py serve`) puts computing tasks whose
    worker was silent past the lease back to waiting, so a run's counts show them as waiting by
    themselves; hand-out also takes such tasks over at once. Visible and editable in the admin
    under Django Q2 → Scheduled tasks (a staff change to the timing is kept by later migrations)."""
    from django_q.models import Schedule

    Schedule.objects.using(using).get_or_create(
        name=LEASE_SWEEP,
        defaults={
            "func": "farm.services.leases_expire",
            "schedule_type": Schedule.MINUTES,
            "minutes": 1,
            "repeats": -1,
        },
    )


class FarmConfig(AppConfig):
    verbose_name = "Task farm"
    name = "farm"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the Basic auth scheme with drf-spectacular.
        from farm import authentication  # noqa: F401

        post_migrate.connect(_schedule_lease_sweep, sender=self, dispatch_uid="farm.lease_sweep")

    def admin_dashboard(self, request: Any) -> list[dict[str, Any]]:
        """Cards on the admin index: runs and the tasks being computed right now."""
        from django.urls import reverse

        from farm.models import Run, Task

        return [
            {
                "title": "Farm runs",
                "value": Run.objects.count(),
                "url": reverse("admin:farm_run_changelist"),
                "note": "task farm runs of all users",
            },
            {
                "title": "Farm tasks computing",
                "value": Task.objects.filter(status=Task.Status.COMPUTING).count(),
                "url": reverse("admin:farm_task_changelist") + "?status__exact=computing",
                "note": "handed out, not finished",
            },
        ]
