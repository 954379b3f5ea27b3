"""Root URL map: the project's composition root, which names each app's URLconf by its dotted
path as `INSTALLED_APPS` names the apps (Django imports them; this module imports no app).

Each app decides its own paths, because the seed dialects fix them (`/pool/…`, `/api/…`, `/v1/…`,
`/task`, `/progress/…`).
"""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerSplitView

from coordinator.views import LandingView, MetricsView

urlpatterns = [
    path("", LandingView.as_view(), name="landing"),
    path("admin/", admin.site.urls),
    path("metrics", MetricsView.as_view(), name="metrics"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves Swagger UI's start script as a file of its own, as the CSP requires.
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="docs"),
    path("redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
    path("", include("coordinator.api.urls")),
    path("", include("pool.urls")),
    path("", include("farm.urls")),
    path("", include("jobs.urls")),
    path("", include("progress.urls")),
    path("", include("webhooks.urls")),
]
