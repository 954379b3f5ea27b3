"""Platform endpoints: health, who-am-I, and the documented JWT views."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt import views as jwt_views

from coordinator.api.envelope import error_body
from coordinator.selectors import database_is_up


class ErrorEnvelopeSerializer(serializers.Serializer):
    """The body of every error of our own endpoints."""

    code = serializers.CharField()
    message = serializers.CharField()
    extra = serializers.DictField()


HealthSerializer = inline_serializer("Health", {"status": serializers.CharField(), "database": serializers.CharField()})


class HealthApi(APIView):
    """Liveness and readiness for load balancers: 200 when the database answers, 503 otherwise."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    @extend_schema(responses={200: HealthSerializer, 503: ErrorEnvelopeSerializer}, tags=["platform"])
    def get(self, request: Request) -> Response:
        if database_is_up():
            return Response({"status": "ok", "database": "ok"})
        return Response(
            error_body("database_unavailable", "The database does not answer.", {"database": "down"}), status=503
        )


class MeApi(APIView):
    """The authenticated user: id, email, name and role."""

    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        email = serializers.EmailField()
        name = serializers.CharField()
        role = serializers.CharField()

    @extend_schema(responses={200: OutputSerializer, 401: ErrorEnvelopeSerializer, 403: ErrorEnvelopeSerializer},
                   tags=["auth"])
    def get(self, request: Request) -> Response:
        return Response(self.OutputSerializer(request.user).data)


_TOKEN_ERRORS = {400: ErrorEnvelopeSerializer, 401: ErrorEnvelopeSerializer}


@extend_schema(tags=["auth"], responses={200: jwt_views.TokenObtainPairView.serializer_class, **_TOKEN_ERRORS})
class TokenObtainApi(jwt_views.TokenObtainPairView):
    """Exchange email and password for an access and a refresh token."""


@extend_schema(tags=["auth"], responses={200: jwt_views.TokenRefreshView.serializer_class, **_TOKEN_ERRORS})
class TokenRefreshApi(jwt_views.TokenRefreshView):
    """Exchange a refresh token for a new access token."""


@extend_schema(tags=["auth"], responses={200: OpenApiResponse(description="The token is valid."), **_TOKEN_ERRORS})
class TokenVerifyApi(jwt_views.TokenVerifyView):
    """Check that a token is valid (signature, expiry, type)."""
