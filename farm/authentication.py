"""HTTP Basic as the taskfarm client speaks it: email + password, or a farm token as the username.

`GET /api/token` returns an HS256 JWT of type `farm` signed with a key derived from the platform
secret. The client sends that token as the Basic *username* (any password) on every later call,
so verifying it must be cheap: an HMAC check and one primary-key lookup, never a password hash.
Email + password runs the normal password check (PBKDF2) and is meant for fetching the token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

import jwt
from django.conf import settings
from django.contrib.auth import authenticate
from django.utils.crypto import salted_hmac
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from coordinator.models import User

REALM = 'Basic realm="Authentication Required"'
TOKEN_TYPE = "farm"


def _signing_key() -> bytes:
    return hashlib.sha256(b"coordinator.farm.token:" + settings.SECRET_KEY.encode()).digest()


def _password_stamp(user: User) -> str:
    # Changing the password (or disabling the login) revokes every farm token of the user.
    return salted_hmac("coordinator.farm.token.pwd", user.password or "").hexdigest()[:16]


def farm_token_for(user: User) -> str:
    """A non-expiring token (as the seed's), revoked when the user's password changes."""
    payload = {"typ": TOKEN_TYPE, "uid": user.pk, "pwd": _password_stamp(user)}
    return jwt.encode(payload, _signing_key(), algorithm="HS256")


def user_for_farm_token(token: str) -> User | None:
    """The active user a farm token names, or None for anything else."""
    try:
        payload = jwt.decode(token, _signing_key(), algorithms=["HS256"])
    except jwt.PyJWTError:
        return None
    if payload.get("typ") != TOKEN_TYPE or not isinstance(payload.get("uid"), int):
        return None
    user = User.objects.filter(pk=payload["uid"], is_active=True).first()
    if user is None or payload.get("pwd") != _password_stamp(user):
        return None
    return user


class FarmBasicAuthentication(BaseAuthentication):
    """Basic auth with a farm token as username (any password) or email + password."""

    def authenticate(self, request: Request) -> tuple[User, None] | None:
        auth = get_authorization_header(request).split()
        if not auth or auth[0].lower() != b"basic":
            return None
        if len(auth) != 2:
            raise exceptions.AuthenticationFailed("Invalid basic header.")
        try:
            decoded = base64.b64decode(auth[1], validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise exceptions.AuthenticationFailed("Invalid basic header.") from exc
        username, _, password = decoded.partition(":")
        if username.count(".") == 2:
            user = user_for_farm_token(username)
            if user is not None:
                return user, None
        found = authenticate(request=request._request, username=username, password=password)
        if isinstance(found, User) and found.is_active:
            return found, None
        raise exceptions.AuthenticationFailed("Unauthorized Access")

    def authenticate_header(self, request: Request) -> str:
        return REALM


class FarmBasicScheme(OpenApiAuthenticationExtension):
    target_class = "farm.authentication.FarmBasicAuthentication"
    name = "farmBasicAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "basic",
            "description": "Email + password, or the token from GET /api/token as the username (any password).",
        }
