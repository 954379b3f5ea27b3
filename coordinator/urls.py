"""Root URL map (see docs/architecture in shared/design/architecture.md).

Each app contributes its own `urls.py`; the app decides its paths because the seed dialects fix
them (`/pool/…`, `/api/…`, `/v1/…`, `/task`, `/progress/…`).
"""

from importlib.util import find_spec

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("", include("coordinator.api.urls")),
]

# Feature apps mount their URLs once they have any.
for app in ("pool", "farm", "jobs", "progress"):
    if find_spec(f"{app}.urls") is not None:
        urlpatterns.append(path("", include(f"{app}.urls")))
