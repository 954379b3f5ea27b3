"""HTTP Basic as the taskfarm client speaks it: email + password, or a farm token as the username.

`GET /api/token` returns an HS256 JWT of type `farm` signed with a key derived from the platform
secret. The client sends that token as the Basic *username* (any password) on every later call,
so verifying it must be cheap: an HMAC check and one primary-key lookup, never a password hash,
and that lookup is cached per process for a few seconds (`FARM_AUTH_CACHE_SECONDS`): a worker sends
4 requests per task, and the user row was one of the few round trips each of them still made.
Saving or deleting a user empties this process's cache at once (so a password change or a
deactivation is seen immediately here, and by other processes within the cache's lifetime).
Email + password runs the normal password check (PBKDF2) and is meant for fetching the token.

Each token also carries a random id (`jti`). `taskfarm-worker` fetches a token of its own for every
worker it starts, so `POST /api/worker` binds that id to the worker it registers, and the token
alone tells that worker's later PUTs apart (`farm.api.identity`): no cookie to keep, send and parse on
every request. Tokens issued before carry no id; their workers are told apart by the cookie.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

import jwt
from django.conf import settings
from django.contrib.auth import authenticate
from django.db.models.signals import post_delete, post_save
from django.utils.crypto import salted_hmac
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from coordinator.models import User
from farm.conf import auth_cache_seconds

REALM = 'Basic realm="Authentication Required"'
TOKEN_TYPE = "farm"


def _signing_key() -> bytes:
    return hashlib.sha256(b"coordinator.farm.token:" + settings.SECRET_KEY.encode()).digest()


def _password_stamp(user: User) -> str:
    # Changing the password (or disabling the login) revokes every farm token of the user.
    return salted_hmac("coordinator.farm.token.pwd", user.password or "").hexdigest()[:16]


def farm_token_for(user: User) -> str:
    """A non-expiring token (as the seed's), revoked when the user's password changes; each one
    has its own id (`jti`), which the worker registered with it is then known by."""
    payload = {"typ": TOKEN_TYPE, "uid": user.pk, "pwd": _password_stamp(user), "jti": secrets.token_hex(8)}
    return jwt.encode(payload, _signing_key(), algorithm="HS256")


@dataclass(frozen=True, slots=True)
class FarmToken:
    """A verified farm token, as DRF's `request.auth`: its id, None for tokens issued without one."""

    token_id: str | None


TOKEN_ID_MAX = 32  # the longest id taken from a token (ours are 16 hex characters)

# token -> (monotonic expiry, user as loaded then, its FarmToken). Bounded; emptied whenever any user is saved.
_token_users: dict[str, tuple[float, User, FarmToken]] = {}
_token_users_lock = threading.Lock()
TOKEN_CACHE_MAX = 10_000


def _forget_users(**kwargs: Any) -> None:
    # Any user change (password, is_active, role) may change what a cached token grants.
    with _token_users_lock:
        _token_users.clear()


post_save.connect(_forget_users, sender=User, dispatch_uid="farm.authentication.forget_users.save")
post_delete.connect(_forget_users, sender=User, dispatch_uid="farm.authentication.forget_users.delete")


def user_for_farm_token(token: str) -> tuple[User, FarmToken] | None:
    """The active user a farm token names and the token's id, or None for anything else (cached a
    few seconds)."""
    ttl = auth_cache_seconds()
    if ttl > 0:
        hit = _token_users.get(token)
        if hit is not None and hit[0] > time.monotonic():
            # A copy: request handlers must not share (and mutate) one object across requests.
            return _clone(hit[1]), hit[2]
    found = _user_for_farm_token(token)
    if found is None:
        return None
    user, farm_token = found[0], FarmToken(found[1])
    if ttl > 0:
        with _token_users_lock:
            if len(_token_users) >= TOKEN_CACHE_MAX:
                _token_users.clear()
            _token_users[token] = (time.monotonic() + ttl, _clone(user), farm_token)
    return user, farm_token


def _clone(user: User) -> User:
    """What `copy.copy` makes of a model instance (its own `_state` and related-object cache), at a
    tenth of the cost: this runs on every farm request (`copy.copy` goes through pickling's
    `__reduce_ex__`, about 25 µs)."""
    clone = User.__new__(User)
    clone.__dict__.update(user.__dict__)
    state = copy.copy(user._state)
    state.fields_cache = dict(user._state.fields_cache)
    clone._state = state
    return clone


def _user_for_farm_token(token: str) -> tuple[User, str | None] | None:
    try:
        payload = jwt.decode(token, _signing_key(), algorithms=["HS256"])
    except jwt.PyJWTError:
        return None
    if payload.get("typ") != TOKEN_TYPE or not isinstance(payload.get("uid"), int):
        return None
    user = User.objects.filter(pk=payload["uid"], is_active=True).first()
    if user is None or payload.get("pwd") != _password_stamp(user):
        return None
    token_id = payload.get("jti")
    if not isinstance(token_id, str) or not 0 < len(token_id) <= TOKEN_ID_MAX:
        token_id = None  # signed by us, so only an older token: known by the cookie instead
    return user, token_id


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
        if username.count(".") == 2:
            by_token = user_for_farm_token(username)
            if by_token is not None:
                return by_token
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
