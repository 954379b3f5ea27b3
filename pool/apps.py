from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.http import HttpRequest
from django.urls import reverse


class PoolConfig(AppConfig):
    verbose_name = "Device task pool"
    name = "pool"
    default_auto_field = "django.db.models.BigAutoField"

    def health(self) -> dict[str, str]:
        """For /healthz: free space for the day log, when there is one."""
        from coordinator.selectors import disk_state
        from pool.conf import journal_dir

        directory = journal_dir()
        return {} if directory is None else {"day log disk": disk_state(directory)}

    def admin_dashboard(self, request: HttpRequest) -> list[dict[str, Any]]:
        """Cards on the admin index: devices waiting for validation, open deliveries."""
        from pool.models import Delivery, Device

        waiting = Device.objects.filter(validated=False, enabled=True).count()
        open_rows = Delivery.objects.filter(state__in=["pending", "progress"]).count()
        return [
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
