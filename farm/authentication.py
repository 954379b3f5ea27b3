"""HTTP Basic as the taskfarm client speaks it: email + password, or a farm token as the username.

`GET /api/token` returns a token of kind `farm` (`coordinator.tokens`: the platform's key, its own
`token_type`). The client sends it as the Basic *username* (any password) on every later call, so
verifying it is a signature check and one primary-key lookup, never a password hash. The token does
not expire (as the seed's); it carries its user's credential stamp, so it stops working when the user
is deactivated or deleted, or their password or role changes. Email + password runs the normal
password check (PBKDF2) and is meant for fetching the token.

Each token also carries a random id (`jti`), so two tokens of one user are never the same string.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import authenticate
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from coordinator.models import User
from coordinator.throttling import first_refusal
from coordinator.tokens import TokenError, TokenKind, credential_stamp, token_issue, token_verify

REALM = 'Basic realm="Authentication Required"'
TOKEN_ID_BYTES = 8


def farm_token_for(user: User) -> str:
    """A non-expiring farm token for `user`, with an id of its own."""
    claims = {"uid": user.pk, "stamp": credential_stamp(user), "jti": secrets.token_hex(TOKEN_ID_BYTES)}
    return token_issue(TokenKind.FARM, claims)


@dataclass(frozen=True, slots=True)
class FarmToken:
    """A verified farm token, as DRF's `request.auth`."""

    token_id: str


def user_for_farm_token(token: str) -> tuple[User, FarmToken] | None:
    """The active user a farm token names, and the token; None for anything else."""
    try:
        claims = token_verify(token, TokenKind.FARM)
    except TokenError:
        return None
    user_id, token_id = claims.get("uid"), claims.get("jti")
    if type(user_id) is not int or not isinstance(token_id, str) or len(token_id) != 2 * TOKEN_ID_BYTES:
        return None
    user = User.objects.filter(pk=user_id, is_active=True).first()
    if user is None or claims.get("stamp") != credential_stamp(user):
        return None
    return user, FarmToken(token_id)


class FarmBasicAuthentication(BaseAuthentication):
    """Basic auth with a farm token as username (any password) or email + password."""

    def authenticate(self, request: Request) -> tuple[User, FarmToken | None] | None:
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
        if "@" not in username:  # not an email: a token, or nothing (refused before any password hash)
            by_token = user_for_farm_token(username) if username.count(".") == 2 else None
            if by_token is None:
                raise exceptions.AuthenticationFailed("Unauthorized Access")
            return by_token
        wait = first_refusal(request, self)
        if wait is not None:
            raise exceptions.Throttled(wait)
        found = authenticate(request=request._request, username=username, password=password)
        if isinstance(found, User) and found.is_active:
            return found, None
        raise exceptions.AuthenticationFailed("Unauthorized Access")

    @staticmethod
    def credential_account(request: Request) -> object:
        auth = get_authorization_header(request).split()
        try:
            return base64.b64decode(auth[1], validate=True).decode("utf-8").partition(":")[0]
        except (IndexError, binascii.Error, UnicodeDecodeError):
            return None

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
