"""A URLconf with views that crash, to pin the 500 envelope."""

from django.http import HttpRequest, HttpResponse
from django.urls import include, path
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.views import APIView


class CrashApi(APIView):
    permission_classes = [AllowAny]

    def get(self, request: Request) -> None:
        raise RuntimeError("boom")


def plain_crash(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("plain boom")


urlpatterns = [
    path("api/crash", CrashApi.as_view()),
    path("api/plain-crash", plain_crash),
    path("", include("coordinator.urls")),
]
