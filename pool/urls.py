from django.urls import include, path

from pool.stream import pool_events

urlpatterns = [
    path("pool/events", pool_events, name="pool-events"),
    path("", include("pool.api.urls")),
]
