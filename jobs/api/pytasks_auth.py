"""pytasks-style JWTs: `{"allowed_tasks": {...}, "exp": "<unix seconds as a string>"}`.

Signed and verified by `coordinator.tokens` (kind `pytasks`). A platform access token (simplejwt)
is accepted too: it stands for its user, whose permissions then decide.
"""

from __future__ import annotations

import time
from typing import Any

from rest_framework.exceptions import AuthenticationFailed
from rest_framework_simplejwt.authentication import JWTAuthentication

from coordinator import tokens
from coordinator.models import User
from coordinator.tokens import TokenKind, credential_stamp
from jobs import conf
from jobs.registry import all_specs
from jobs.services import user_may_run

MISSING_HEADER = "This endpoint requires the 'Authentication: Bearer JWT_token' header."


class PytasksAuthError(Exception):
    def __init__(self, message: str, status_code: int = 401) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


def token_issue(user: User) -> tuple[str, str]:
    """A token granting the protected job types this user may run; returns (token, exp).

    It names its user and carries their credential stamp, so it stops working when the user is
    deactivated or deleted, or their password or role changes."""
    allowed = {spec.name: True for spec in all_specs() if spec.protected and user_may_run(user, spec)}
    claims: dict[str, Any] = {"allowed_tasks": allowed, "user_id": user.pk, "stamp": credential_stamp(user)}
    lifetime = conf.token_expire_seconds()
    exp = "infinity"
    if lifetime > 0:
        exp = str(int(time.time()) + lifetime)
        claims["exp"] = exp  # a string, as pytasks writes it
    return tokens.token_issue(TokenKind.PYTASKS, claims), exp


def token_from_header(header: str | None) -> str:
    # pytasks: the header must contain "Bearer"; the token is the second word.
    if not header or "Bearer" not in header:
        raise PytasksAuthError(MISSING_HEADER)
    parts = header.split()
    if len(parts) < 2:
        raise PytasksAuthError("This token is invalid")
    return parts[1]


def token_decode(token: str) -> dict[str, Any]:
    """The verified payload of a pytasks token or a platform access token, with pytasks' messages.

    A pytasks token that names a user holds only while that user is active with the credentials
    it was issued for; an access token is checked by simplejwt (kind, expiry, the user active)."""
    kind = tokens.token_kind_unverified(token)
    if kind == TokenKind.ACCESS:
        return _access_token_payload(token)
    try:
        payload = tokens.token_verify(token, TokenKind.PYTASKS)
    except tokens.TokenExpiredError as exc:
        raise PytasksAuthError("This token signature has expired.") from exc
    except tokens.TokenSignatureError as exc:
        raise PytasksAuthError("This token has invalid signature.") from exc
    except tokens.TokenError as exc:
        raise PytasksAuthError("This token is invalid") from exc
    if "user_id" in payload:
        user = _user(payload.get("user_id"))
        if user is None or payload.get("stamp") != credential_stamp(user):
            raise PytasksAuthError("This token is invalid")
    return payload


def _access_token_payload(token: str) -> dict[str, Any]:
    """An access token's payload, checked as for any authenticated request (simplejwt's lookup:
    its user exists, is active and still has the password the token was issued for)."""
    try:
        validated = tokens.PlatformAccessToken(token)
        JWTAuthentication().get_user(validated)
    except (tokens.SimpleJwtTokenError, AuthenticationFailed) as exc:
        raise PytasksAuthError("This token is invalid") from exc
    return dict(validated.payload)


def _user(user_id: Any) -> User | None:
    # pytasks tokens carry an int, simplejwt access tokens a string
    if isinstance(user_id, str) and user_id.isdigit() and len(user_id) < 19:
        user_id = int(user_id)
    if type(user_id) is not int or not 0 < user_id < 2**63:
        return None
    return User.objects.filter(pk=user_id, is_active=True).first()


def payload_user(payload: dict[str, Any]) -> User | None:
    """The active user a verified payload names, if any."""
    return _user(payload.get("user_id"))


def is_platform_access_token(payload: dict[str, Any]) -> bool:
    return payload.get("token_type") == TokenKind.ACCESS


def allowed_to_run(payload: dict[str, Any], job_type: str) -> None:
    """Raise with pytasks' message unless the token allows this protected type."""
    from jobs.registry import get_spec

    spec = get_spec(job_type)
    if is_platform_access_token(payload):
        user = payload_user(payload)
        if user is None or spec is None or not user_may_run(user, spec):
            raise PytasksAuthError("You don't have permission to use this tasktype.")
        return
    allowed = payload.get("allowed_tasks")
    if not isinstance(allowed, dict) or job_type not in allowed:
        raise PytasksAuthError("The payload in your JWT is not valid.")
    if not allowed[job_type]:
        raise PytasksAuthError("You don't have permission to use this tasktype.")
