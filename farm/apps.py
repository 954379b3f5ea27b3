from __future__ import annotations

from types import ModuleType
from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate

from farm.conf import LEASE_SWEEP


def _schedule_lease_sweep(using: str = "default", **kwargs: Any) -> None:
    """Every minute the django-q2 cluster (run by `manage.py serve`) puts computing tasks whose
    worker was silent past the lease back to waiting, so a run's counts show them as waiting by
    themselves; hand-out also takes such tasks over at once. Visible and editable in the admin
    under Django Q2 → Scheduled tasks (a staff change to the timing is kept by later migrations)."""
    from coordinator.services import schedule_every_minute

    schedule_every_minute(name=LEASE_SWEEP, func="farm.services.leases_expire", using=using)


class FarmConfig(AppConfig):
    verbose_name = "Task farm"
    name = "farm"
    default_auto_field = "django.db.models.BigAutoField"

    def operations(self) -> ModuleType:
        """Its panel of the operations dashboard (coordinator.selectors.operations_parts)."""
        from farm import operations

        return operations

    def ready(self) -> None:
        # Registers the Basic auth scheme with drf-spectacular.
        from coordinator.metrics import register_collector
        from farm import authentication  # noqa: F401
        from farm.metrics import FarmCollector

        register_collector(FarmCollector())

        post_migrate.connect(_schedule_lease_sweep, sender=self, dispatch_uid="farm.lease_sweep")

    def admin_dashboard(self, request: Any) -> list[dict[str, Any]]:
        """Cards on the admin index: runs, the work being computed, and the work that is stuck."""
        from django.urls import reverse
        from django.utils import timezone
        from django.utils.timesince import timesince

        from farm.models import Run, Task
        from farm.selectors import lease_sweep_last_run, tasks_past_lease, tasks_unclaimed, workers_alive, workers_lost

        tasks = reverse("admin:farm_task_changelist")
        workers = reverse("admin:farm_worker_changelist")
        swept = lease_sweep_last_run()
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
                "url": f"{tasks}?status__exact=computing",
                "note": "handed out, not finished",
            },
            {
                "title": "Farm workers alive",
                "value": workers_alive().count(),
                "url": f"{workers}?state=alive",
                "note": f"{workers_lost().count()} lost (stopped reporting)",
            },
            {
                "title": "Farm tasks past their lease",
                "value": tasks_past_lease().count(),
                "url": f"{tasks}?stuck=past_lease",
                "note": "held by a worker that went silent",
            },
            {
                "title": "Farm tasks nobody will claim",
                "value": tasks_unclaimed().count(),
                "url": f"{tasks}?stuck=unclaimed",
                "note": "waiting: run paused or no live worker",
            },
            {
                "title": "Lease sweep",
                "value": f"{timesince(swept, timezone.now())} ago" if swept else "never ran",
                "url": reverse("admin:django_q_schedule_changelist"),
                "note": "returns lapsed leases to waiting, every minute",
            },
        ]
