"""pytasks-style JWTs: `{"allowed_tasks": {...}, "exp": "<unix seconds as a string>"}`.

Signed with the platform's JWT key (RS256 when `JWT_PRIVATE_KEY`/`JWT_PUBLIC_KEY` are set,
otherwise HS256 with the secret key). A platform access token (simplejwt) is accepted too: it
stands for its user, whose permissions then decide.
"""

from __future__ import annotations

import time
from typing import Any

import jwt
from django.conf import settings

from coordinator.models import User
from jobs import conf
from jobs.registry import all_specs
from jobs.services import user_may_run

MISSING_HEADER = "This endpoint requires the 'Authentication: Bearer JWT_token' header."


class PytasksAuthError(Exception):
    def __init__(self, message: str, status_code: int = 401) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


def _verifying_key() -> str:
    return str(settings.JWT_VERIFYING_KEY or settings.JWT_SIGNING_KEY)


def token_issue(user: User) -> tuple[str, str]:
    """A token granting the protected job types this user may run; returns (token, exp)."""
    allowed = {spec.name: True for spec in all_specs() if spec.protected and user_may_run(user, spec)}
    payload: dict[str, Any] = {"allowed_tasks": allowed, "user_id": user.pk}
    lifetime = conf.token_expire_seconds()
    exp = "infinity"
    if lifetime > 0:
        exp = str(int(time.time()) + lifetime)
        payload["exp"] = exp  # a string, as pytasks writes it
    token = jwt.encode(payload, settings.JWT_SIGNING_KEY, algorithm=settings.JWT_ALGORITHM)
    return token, exp


def token_from_header(header: str | None) -> str:
    # pytasks: the header must contain "Bearer"; the token is the second word.
    if not header or "Bearer" not in header:
        raise PytasksAuthError(MISSING_HEADER)
    parts = header.split()
    if len(parts) < 2:
        raise PytasksAuthError("This token is invalid")
    return parts[1]


def token_decode(token: str) -> dict[str, Any]:
    """Decode and verify a token, with pytasks' error messages."""
    try:
        payload = jwt.decode(token, _verifying_key(), algorithms=[settings.JWT_ALGORITHM],
                             options={"verify_aud": False})
    except jwt.ExpiredSignatureError as exc:
        raise PytasksAuthError("This token signature has expired.") from exc
    except jwt.InvalidSignatureError as exc:
        raise PytasksAuthError("This token has invalid signature.") from exc
    except jwt.InvalidTokenError as exc:
        raise PytasksAuthError("This token is invalid") from exc
    except Exception as exc:
        raise PytasksAuthError("An unexpected error occured during JWT decryption.") from exc
    if not isinstance(payload, dict):
        raise PytasksAuthError("This token is invalid")
    return payload


def payload_user(payload: dict[str, Any]) -> User | None:
    user_id = payload.get("user_id")
    # pytasks tokens carry an int, simplejwt access tokens a string
    if isinstance(user_id, str) and user_id.isdigit() and len(user_id) < 19:
        user_id = int(user_id)
    if type(user_id) is not int:
        return None
    return User.objects.filter(pk=user_id, is_active=True).first()


def is_platform_access_token(payload: dict[str, Any]) -> bool:
    return payload.get("token_type") == "access" and "allowed_tasks" not in payload


def check_platform_token(token: str) -> None:
    """Platform access tokens are checked by simplejwt too (token type, blacklist if enabled)."""
    from rest_framework_simplejwt.exceptions import TokenError
    from rest_framework_simplejwt.tokens import AccessToken

    try:
        AccessToken(token)  # type: ignore[arg-type]
    except TokenError as exc:
        raise PytasksAuthError("This token is invalid") from exc


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
