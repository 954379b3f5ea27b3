from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.db.models.signals import post_migrate
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone


def _schedule_rollouts(using: str = "default", **kwargs: Any) -> None:
    """Every minute the django-q2 cluster (run by `manage.py serve`) steps the staged rollouts
    (pool.rollouts). Every cluster may run it; the task row lock keeps two from deciding one
    rollout at once. Visible and editable in the admin under Django Q2 → Scheduled tasks."""
    from coordinator.services import schedule_every_minute
    from pool.conf import ROLLOUT_SCHEDULE

    schedule_every_minute(name=ROLLOUT_SCHEDULE, func="pool.tasks.rollouts_step", using=using)


class PoolConfig(AppConfig):
    verbose_name = "Device task pool"
    name = "pool"
    default_auto_field = "django.db.models.BigAutoField"

    def operations(self) -> ModuleType:
        """Its panel of the operations dashboard (coordinator.selectors.operations_parts)."""
        from pool import operations

        return operations

    def ready(self) -> None:
        from coordinator.metrics import register_collector
        from pool.metrics import PoolCollector

        register_collector(PoolCollector())
        post_migrate.connect(_schedule_rollouts, sender=self, dispatch_uid="pool.rollouts")

    def serve_processes(self) -> list[tuple[str, list[str]]]:
        """`manage.py serve` also runs the day log's writer, when there is a day log."""
        from pool.conf import journal_dir

        if journal_dir() is None:
            return []
        return [("daylog", [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), "pool_journal"])]

    def watch_conditions(self) -> dict[str, Any]:
        """For the silence watchdog's rules on `pooldevice:*`: devices with open deliveries."""
        from pool.selectors import devices_with_open_deliveries

        return {"open_deliveries": devices_with_open_deliveries}

    def health(self) -> dict[str, str]:
        """For /healthz, when there is a day log: free space for it, and whether it is behind
        (messages committed more than POOL_JOURNAL_BEHIND_SECONDS ago not yet written)."""
        from coordinator.selectors import disk_state
        from pool.conf import journal_dir
        from pool.selectors import journal_lag

        directory = journal_dir()
        if directory is None:
            return {}
        _, oldest = journal_lag()
        late = oldest is not None and (timezone.now() - oldest).total_seconds() > settings.POOL_JOURNAL_BEHIND_SECONDS
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
