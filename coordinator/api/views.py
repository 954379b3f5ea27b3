"""Platform endpoints: health, who-am-I, and the documented JWT views."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt import serializers as jwt_serializers
from rest_framework_simplejwt import views as jwt_views
from rest_framework_simplejwt.authentication import JWTAuthentication

from coordinator.api.envelope import error_body
from coordinator.models import User
from coordinator.selectors import platform_health, process_restarts
from coordinator.throttling import CREDENTIAL_THROTTLES, body_field
from coordinator.tokens import (
    PlatformAccessToken,
    PlatformRefreshToken,
    SimpleJwtTokenError,
    TokenKind,
    token_kind_unverified,
)


class ErrorEnvelopeSerializer(serializers.Serializer):
    """The body of every error of our own endpoints."""

    code = serializers.CharField()
    message = serializers.CharField()
    extra = serializers.DictField()


HealthSerializer = inline_serializer(
    "Health",
    {
        "status": serializers.CharField(help_text="`ok`, or `down` when a component failed."),
        "components": serializers.DictField(
            child=serializers.CharField(),
            help_text="Each component's state: ok, absent (not configured or not running here), down, full, stale.",
        ),
        "restarts": serializers.DictField(
            child=serializers.DictField(),
            help_text="Under `manage.py serve`: each process started again since `serve` started "
            "(`restarts`, `last_exit_at` as a UNIX time, `last_exit`).",
        ),
    },
)
HEALTHY = ("ok", "absent")


class HealthApi(APIView):
    """Each component of the platform (database, Redis when configured, the job cluster, the
    progress listener, free space for exports and the day log): 200 when none failed, 503 naming
    those that did."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    @extend_schema(responses={200: HealthSerializer, 503: ErrorEnvelopeSerializer}, tags=["platform"])
    def get(self, request: Request) -> Response:
        components, restarts = platform_health(), process_restarts()
        failed = sorted(name for name, state in components.items() if state not in HEALTHY)
        if not failed:
            return Response({"status": "ok", "components": components, "restarts": restarts})
        message = f"Not working: {', '.join(f'{name} ({components[name]})' for name in failed)}."
        return Response(error_body("unhealthy", message, {"components": components, "restarts": restarts}), status=503)


class MeApi(APIView):
    """The authenticated user: id, email, name and role."""

    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        email = serializers.EmailField()
        name = serializers.CharField()
        role = serializers.CharField()

    @extend_schema(
        responses={200: OutputSerializer, 401: ErrorEnvelopeSerializer, 403: ErrorEnvelopeSerializer}, tags=["auth"]
    )
    def get(self, request: Request) -> Response:
        return Response(self.OutputSerializer(request.user).data)


_TOKEN_ERRORS = {400: ErrorEnvelopeSerializer, 401: ErrorEnvelopeSerializer}


def _user_of(token: PlatformAccessToken | PlatformRefreshToken) -> User:
    """The active user a user token was issued to, with the password it was issued for (simplejwt's
    own lookup, as for every authenticated request)."""
    return JWTAuthentication().get_user(token)  # type: ignore[return-value]


class TokenObtainInput(jwt_serializers.TokenObtainPairSerializer):
    token_class = PlatformRefreshToken


class TokenRefreshInput(jwt_serializers.TokenRefreshSerializer):
    token_class = PlatformRefreshToken

    def validate(self, attrs: dict[str, Any]) -> dict[str, str]:
        _user_of(self.token_class(attrs["refresh"]))
        return super().validate(attrs)


class TokenVerifyInput(jwt_serializers.TokenVerifySerializer):
    def validate(self, attrs: dict[str, None]) -> dict[str, Any]:
        raw = str(attrs["token"])
        kinds = {TokenKind.ACCESS: PlatformAccessToken, TokenKind.REFRESH: PlatformRefreshToken}
        token_class = kinds.get(token_kind_unverified(raw) or "")  # type: ignore[call-overload]
        if token_class is None:
            raise SimpleJwtTokenError("Token has wrong type")
        _user_of(token_class(raw))
        return {}


@extend_schema(
    tags=["auth"],
    responses={200: jwt_views.TokenObtainPairView.serializer_class, **_TOKEN_ERRORS, 429: ErrorEnvelopeSerializer},
)
class TokenObtainApi(jwt_views.TokenObtainPairView):
    """Exchange email and password for an access and a refresh token."""

    serializer_class = TokenObtainInput  # type: ignore[assignment]
    throttle_classes = CREDENTIAL_THROTTLES
    credential_account = staticmethod(body_field("email"))


@extend_schema(tags=["auth"], responses={200: jwt_views.TokenRefreshView.serializer_class, **_TOKEN_ERRORS})
class TokenRefreshApi(jwt_views.TokenRefreshView):
    """Exchange a refresh token of an active user for a new access token."""

    serializer_class = TokenRefreshInput  # type: ignore[assignment]


@extend_schema(tags=["auth"], responses={200: OpenApiResponse(description="The token is valid."), **_TOKEN_ERRORS})
class TokenVerifyApi(jwt_views.TokenVerifyView):
    """Check that a user token from `/auth/token/` is valid (signature, expiry, kind) and its user active."""

    serializer_class = TokenVerifyInput  # type: ignore[assignment]
