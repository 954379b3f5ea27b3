"""ASGI entry point: daphne serves the Channels WebSocket routes and the SSE stream.

Plain HTTP also works here (Django's ASGI handler), but production and `manage.py serve` route
only `/ws/` and the stream paths to this application; everything else goes to the WSGI server.
Apps add WebSocket routes by a `websocket_urlpatterns()` method on their AppConfig, as they add
admin dashboard cards and `serve` processes: this module names no app.
"""

from __future__ import annotations

import os
from typing import Any

from django.apps import apps
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "coordinator.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402


def _websocket_urlpatterns() -> list[Any]:
    patterns: list[Any] = []
    for config in apps.get_app_configs():
        contribute = getattr(config, "websocket_urlpatterns", None)
        if contribute is not None:
            patterns.extend(contribute())
    return patterns


application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(_websocket_urlpatterns()))),
    }
)
