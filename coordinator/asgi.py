"""ASGI entry point: daphne serves the Channels WebSocket routes and the SSE stream.

Plain HTTP also works here (Django's ASGI handler), but production and `manage.py serve` route
only `/ws/` and the stream paths to this application; everything else goes to the WSGI server.
Apps add WebSocket routes by a `websocket_urlpatterns()` method on their AppConfig, as they add
admin dashboard cards and `serve` processes: this module names no app.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlparse

from django.apps import apps
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "coordinator.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator, OriginValidator, WebsocketDenier  # noqa: E402
from django.conf import settings  # noqa: E402


class SameOriginValidator(OriginValidator):
    """Channels' check of a WebSocket's Origin against ALLOWED_HOSTS, which ignores ports, plus the
    port: a page on another port of the same host is another origin (another application), so the
    page must come from the address the socket is opened on (its Host header), or from an origin in
    CSRF_TRUSTED_ORIGINS (a proxy that rewrites Host)."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        headers = dict(scope.get("headers", []))
        origin = urlparse(headers.get(b"origin", b"").decode("latin-1"))
        host = headers.get(b"host", b"").decode("latin-1").lower()
        same = bool(origin.netloc) and origin.netloc.lower() == host
        trusted = f"{origin.scheme}://{origin.netloc}".lower() in {o.lower() for o in settings.CSRF_TRUSTED_ORIGINS}
        if not (same or trusted):
            return await WebsocketDenier()(scope, receive, send)
        return await self.application(scope, receive, send)


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
        "websocket": AllowedHostsOriginValidator(
            SameOriginValidator(AuthMiddlewareStack(URLRouter(_websocket_urlpatterns())), ["*"])
        ),
    }
)
