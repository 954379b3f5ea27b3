from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.db.models.signals import post_migrate
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone

# The day log counts as behind when a committed message waited longer than this to be written.
JOURNAL_BEHIND_SECONDS = 60


def _schedule_rollouts(using: str = "default", **kwargs: Any) -> None:
    """Every minute the django-q2 cluster (run by `manage.py serve`) steps the staged rollouts
    (pool.rollouts). Every cluster may run it; the task row lock keeps two from deciding one
    rollout at once. Visible and editable in the admin under Django Q2 → Scheduled tasks."""
    from django_q.models import Schedule

    from pool.conf import ROLLOUT_SCHEDULE

    Schedule.objects.using(using).get_or_create(
        name=ROLLOUT_SCHEDULE,
        defaults={"func": "pool.tasks.rollouts_step", "schedule_type": Schedule.MINUTES, "minutes": 1, "repeats": -1},
    )


class PoolConfig(AppConfig):
    verbose_name = "Device task pool"
    name = "pool"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        post_migrate.connect(_schedule_rollouts, sender=self, dispatch_uid="pool.rollouts")

    def serve_processes(self) -> list[tuple[str, list[str]]]:
        """`manage.py serve` also runs the day log's writer, when there is a day log."""
        from pool.conf import journal_dir

        if journal_dir() is None:
            return []
        return [("daylog", [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), "pool_journal"])]

    def health(self) -> dict[str, str]:
        """For /healthz, when there is a day log: free space for it, and whether it is behind
        (messages committed more than JOURNAL_BEHIND_SECONDS ago not yet written)."""
        from coordinator.selectors import disk_state
        from pool.conf import journal_dir
        from pool.selectors import journal_lag

        directory = journal_dir()
        if directory is None:
            return {}
        _, oldest = journal_lag()
        late = oldest is not None and (timezone.now() - oldest).total_seconds() > JOURNAL_BEHIND_SECONDS
        return {"day log disk": disk_state(directory), "day log": "behind" if late else "ok"}

    def admin_dashboard(self, request: HttpRequest) -> list[dict[str, Any]]:
        """Cards on the admin index: devices waiting for validation, open deliveries."""
        from pool.conf import journal_dir
        from pool.models import Delivery, Device
        from pool.selectors import journal_lag

        waiting = Device.objects.filter(validated=False, enabled=True).count()
        open_rows = Delivery.objects.filter(state__in=["pending", "progress"]).count()
        behind = []
        if journal_dir() is not None:
            pending, oldest = journal_lag()
            if pending:
                behind.append(
                    {
                        "title": "Day log behind",
                        "value": pending,
                        "url": reverse("healthz"),
                        "note": f"messages not yet written, oldest from {timezone.localtime(oldest):%H:%M:%S}",
                    }
                )
        return [
            *behind,
            {
                "title": "Devices to validate",
                "value": waiting,
                "url": reverse("admin:pool_device_changelist") + "?validated__exact=0",
                "note": "self-enrolled",
            },
            {
                "title": "Open deliveries",
                "value": open_rows,
                "url": reverse("admin:pool_task_changelist") + "?status=open",
                "note": "task x device still pending",
            },
        ]
