"""The farm mounts its API at `/api/`, where the taskfarm-worker client expects it."""

from django.urls import include, path

urlpatterns = [path("api/", include("farm.api.urls"))]
