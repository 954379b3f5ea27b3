from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate, pre_delete

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


def _lock_run_before_delete(sender: Any, instance: Any, using: str, **kwargs: Any) -> None:
    """Any ORM delete of a run (an owner's account deleted, say) locks the run row before Django
    deletes its tasks, as `farm.services.run_delete` does: task rows have no database-level
    foreign key, and a hand-out inserts them under this lock, so none is added behind the delete.
    Django sends this inside the delete's transaction, before the tasks' fast delete."""
    from farm.models import Run

    Run.objects.using(using).select_for_update().filter(pk=instance.pk).values_list("id", flat=True).first()


class FarmConfig(AppConfig):
    verbose_name = "Task farm"
    name = "farm"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the Basic auth scheme with drf-spectacular.
        from farm import authentication  # noqa: F401

        post_migrate.connect(_schedule_lease_sweep, sender=self, dispatch_uid="farm.lease_sweep")
        pre_delete.connect(_lock_run_before_delete, sender=self.get_model("Run"), dispatch_uid="farm.lock_run")

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
