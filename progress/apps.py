from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.http import HttpRequest
from django.urls import reverse


class ProgressConfig(AppConfig):
    verbose_name = "Live progress"
    name = "progress"
    default_auto_field = "django.db.models.BigAutoField"

    def operations(self) -> ModuleType:
        """Its panel of the operations dashboard (coordinator.selectors.operations_parts)."""
        from progress import operations

        return operations

    def ready(self) -> None:
        from coordinator.metrics import register_collector
        from progress.metrics import ProgressCollector

        register_collector(ProgressCollector())

    def serve_processes(self) -> list[tuple[str, list[str]]]:
        """`manage.py serve` also runs the socket listener (contract 3)."""
        return [("progress", [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), "progress_listen"])]

    def websocket_urlpatterns(self) -> list[Any]:
        """The WebSocket routes `coordinator/asgi.py` serves."""
        from progress.routing import websocket_urlpatterns

        return list(websocket_urlpatterns)

    def health(self) -> dict[str, str]:
        """For /healthz: whether the socket listener listens (`absent` where it does not run). Its
        socket is not connected to: every connection takes a stream uid, and the seed hands uids
        out round-robin. The kernel's table of listening sockets tells a live listener from the
        file a killed one left behind (where there is no such table, the file is taken as live)."""
        import stat

        from coordinator.selectors import unix_socket_listening

        path = Path(settings.PROGRESS_SOCKET)
        try:
            if not stat.S_ISSOCK(path.stat().st_mode):
                return {"progress listener": "down"}
        except FileNotFoundError:
            return {"progress listener": "absent"}
        return {"progress listener": "down" if unix_socket_listening(path) is False else "ok"}

    def admin_dashboard(self, request: HttpRequest | None) -> list[dict[str, Any]]:
        """A card linking the Live page (admins only), with the number of streams running now. The
        live overview (request None) carries it to every dashboard reader: the same number reaches
        them each minute as the `progress.live` value."""
        from progress.models import ProgressTopic

        if request is not None and not getattr(request.user, "is_superuser", False):
            return []
        live = ProgressTopic.objects.filter(ended_at__isnull=True)
        sockets = live.filter(topic__startswith="stream:").count()
        return [
            {
                "title": "Live progress",
                "value": live.count(),
                "url": reverse("admin:progress_live"),
                "note": f"{sockets} socket stream{'s' if sockets != 1 else ''} running",
            }
        ]
