"""Every token the platform issues or accepts: one key choice, one way to sign, one way to verify.

Kinds, told apart by the `token_type` claim:
- `access`, `refresh`: user tokens from `/auth/token/` (issued and checked by simplejwt, which is
  configured in settings with the keys chosen here);
- `device`: a pool device's token from `POST /pool/token`;
- `farm`: the taskfarm client's token from `GET /api/token`;
- `pytasks`: the pytasks dialect's token from `/token`. The seed's own tokens carry no
  `token_type` (just `allowed_tasks` and a string `exp`), so a token without one that carries
  `allowed_tasks` is of this kind too: a pytasks deployment sharing the key pair keeps working.

Keys: the RS256 pair when `JWT_PRIVATE_KEY`/`JWT_PUBLIC_KEY` are set, else HS256 with the secret
key (chosen in settings, where the environment is read). A token of one kind is refused wherever
another kind is expected.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import jwt
from django.conf import settings
from django.utils.crypto import salted_hmac
from rest_framework_simplejwt.exceptions import TokenError as SimpleJwtTokenError
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from coordinator.models import User


class TokenKind(StrEnum):
    ACCESS = "access"
    REFRESH = "refresh"
    DEVICE = "device"
    FARM = "farm"
    PYTASKS = "pytasks"


class TokenError(Exception):
    """The token is not a valid token of the expected kind."""


class TokenExpiredError(TokenError):
    """The token was valid, and has expired."""


class TokenSignatureError(TokenError):
    """The token's signature does not match the platform's key."""


def signing_key() -> str:
    return str(settings.JWT_SIGNING_KEY)


def verifying_key() -> str:
    return str(settings.JWT_VERIFYING_KEY or settings.JWT_SIGNING_KEY)


def algorithm() -> str:
    return str(settings.JWT_ALGORITHM)


def credential_stamp(user: User) -> str:
    """A short digest of what a token's grant rests on (password hash and role): a token carrying
    it stops working when either changes, or when the password is removed."""
    return salted_hmac("coordinator.tokens.stamp", f"{user.password}|{user.role}").hexdigest()[:16]


def token_issue(
    kind: TokenKind, claims: dict[str, Any], lifetime: timedelta | None = None, *, issued_at: datetime | None = None
) -> str:
    """Sign `claims` as a token of `kind`; with a lifetime it gets `iat` and a numeric `exp`."""
    payload = {**claims, "token_type": str(kind)}
    if lifetime is not None:
        now = int(issued_at.timestamp()) if issued_at is not None else int(time.time())
        payload["iat"] = now
        payload["exp"] = now + int(lifetime.total_seconds())
    return jwt.encode(payload, signing_key(), algorithm=algorithm())


def token_kind_unverified(token: str) -> str | None:
    """The kind a token claims to be, without checking it (only to pick who verifies it)."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    if not isinstance(claims, dict):
        return None
    value = claims.get("token_type")
    if value is None and "allowed_tasks" in claims:
        return str(TokenKind.PYTASKS)
    return value if isinstance(value, str) else None


def token_verify(token: str, kind: TokenKind) -> dict[str, Any]:
    """The verified claims of a token of `kind`; raises a `TokenError` for anything else."""
    # pytasks writes `exp` as a string, which PyJWT refuses to compare: checked below instead.
    try:
        payload = jwt.decode(
            token,
            verifying_key(),
            algorithms=[algorithm()],
            options={"verify_exp": kind != TokenKind.PYTASKS, "verify_aud": False},
        )
    except jwt.ExpiredSignatureError as exc:
        raise TokenExpiredError("The token has expired.") from exc
    except jwt.InvalidSignatureError as exc:
        raise TokenSignatureError("The token's signature is not ours.") from exc
    except jwt.PyJWTError as exc:
        raise TokenError("The token is malformed.") from exc
    if not isinstance(payload, dict):
        raise TokenError("The token is malformed.")
    claimed = payload.get("token_type")
    if claimed != kind and not (kind == TokenKind.PYTASKS and claimed is None and "allowed_tasks" in payload):
        raise TokenError(f"This is not a {kind} token.")
    if kind == TokenKind.PYTASKS and "exp" in payload:
        _check_string_exp(payload["exp"])
    return payload


def _check_string_exp(exp: Any) -> None:
    try:
        expires = float(exp)
    except (TypeError, ValueError, OverflowError) as exc:
        raise TokenError("The token's expiry is not a time.") from exc
    if not expires > time.time():  # also refuses NaN
        raise TokenExpiredError("The token has expired.")


# --- user tokens (simplejwt) ---------------------------------------------------------------------
# simplejwt checks a token's expiry before its kind, and its expiry check fails with a TypeError on
# a pytasks token's string `exp`: these classes look at the kind first, so a token of another kind
# is an ordinary invalid token (401) everywhere simplejwt reads one (`SIMPLE_JWT`'s
# `AUTH_TOKEN_CLASSES`, the refresh and verify endpoints, the WebSocket and SSE handshakes).


def _refuse_other_kinds(token: Any, kind: TokenKind) -> None:
    raw = token.decode("ascii", "replace") if isinstance(token, bytes) else str(token)
    if token_kind_unverified(raw) != kind:
        raise SimpleJwtTokenError("Token has wrong type")


class PlatformAccessToken(AccessToken):
    def __init__(self, token: Any = None, verify: bool = True) -> None:
        if token is not None:
            _refuse_other_kinds(token, TokenKind.ACCESS)
        super().__init__(token, verify)


class PlatformRefreshToken(RefreshToken):
    access_token_class = PlatformAccessToken

    def __init__(self, token: Any = None, verify: bool = True) -> None:
        if token is not None:
            _refuse_other_kinds(token, TokenKind.REFRESH)
        super().__init__(token, verify)
