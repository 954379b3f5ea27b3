"""WebSocket routes, offered to `coordinator/asgi.py` by `ProgressConfig.websocket_urlpatterns()`."""

from django.urls import path

from progress.consumers import ProgressConsumer

websocket_urlpatterns = [path("ws/progress/", ProgressConsumer.as_asgi())]
