"""DRF authentication for devices (their own JWT kind) and the `IsDevice` permission."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from coordinator.tokens import TokenError, TokenExpiredError, TokenKind, token_kind_unverified
from pool.errors import DeviceDisabledError, DeviceNotValidatedError
from pool.models import Device
from pool.tokens import device_stamp, device_token_decode


class DeviceTokenInvalid(exceptions.AuthenticationFailed):
    default_code = "invalid_token"


class DeviceJWTAuthentication(BaseAuthentication):
    """`Authorization: Bearer <device token>`; `request.user` becomes the `Device`.

    A token of another kind (a user's access token) is not ours: we step aside so that the
    user authenticators may look at it, and `IsDevice` then refuses the user. A device is
    checked (enabled, validated) on every request, so disabling it takes effect at once.
    """

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[Device, dict[str, Any]] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword.lower().encode():
            return None
        if len(parts) != 2:
            raise DeviceTokenInvalid("The Authorization header must be `Bearer <token>`.")
        try:
            token = parts[1].decode("ascii")
        except UnicodeDecodeError as exc:
            raise DeviceTokenInvalid("The token is not valid.") from exc
        if token_kind_unverified(token) != TokenKind.DEVICE:
            return None
        return device_from_token(token)

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="pool-device"'


def device_from_token(token: str) -> tuple[Device, dict[str, Any]]:
    """The enabled, validated device a device token names, with its claims; raises DRF's
    AuthenticationFailed (401) or PermissionDenied (403)."""
    try:
        payload = device_token_decode(token)
    except TokenExpiredError as exc:
        raise exceptions.AuthenticationFailed("The device token has expired.", code="token_expired") from exc
    except TokenError as exc:
        raise DeviceTokenInvalid("The device token is not valid.") from exc
    device_id: Any = payload.get("device_id", payload.get("sub"))
    try:
        device_pk = int(device_id)
    except (TypeError, ValueError) as exc:
        raise DeviceTokenInvalid("The device token names no device.") from exc
    if str(payload.get("sub")) != str(device_pk):
        raise DeviceTokenInvalid("The device token's `sub` and `device_id` disagree.")
    device = Device.objects.filter(pk=device_pk).first() if 0 < device_pk < 2**63 else None
    if device is None:
        raise DeviceTokenInvalid("The device of this token no longer exists.")
    if payload.get("stamp") != device_stamp(device.secret_hash):
        raise DeviceTokenInvalid("The device token was revoked: the device's secret has been replaced.")
    if not device.enabled:
        raise exceptions.PermissionDenied(DeviceDisabledError.default_message, code=DeviceDisabledError.code)
    if not device.validated:
        raise exceptions.PermissionDenied(DeviceNotValidatedError.default_message, code=DeviceNotValidatedError.code)
    return device, payload


class IsDevice(BasePermission):
    """The caller authenticated with a device token (users, even admins, are refused)."""

    message = "This endpoint is for devices: authenticate with a device token from POST /pool/token."

    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(getattr(request, "user", None), Device)


class DeviceJWTScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    target_class = "pool.authentication.DeviceJWTAuthentication"
    name = "deviceJwtAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "Device token from POST /pool/token (`token_type: device`).",
        }
