"""Device JWTs: `token_type: "device"`, `sub` and `device_id`, `exp`, `iat`, `jti`.

Signed with the platform key (`JWT_SIGNING_KEY`, HS256) or the RS256 key pair when configured,
like user tokens; the `token_type` keeps the two kinds apart in both directions.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import jwt
from django.utils import timezone

from pool import conf

DEVICE_TOKEN_TYPE = "device"


def device_token_encode(*, device_id: int, now: datetime | None = None) -> tuple[str, datetime]:
    """A signed device token and its expiry."""
    issued = now or timezone.now()
    exp = issued + conf.device_token_lifetime()
    payload = {
        "token_type": DEVICE_TOKEN_TYPE,
        "sub": str(device_id),
        "device_id": device_id,
        "iat": int(issued.timestamp()),
        "exp": int(exp.timestamp()),
        "jti": uuid.uuid4().hex,
    }
    token = jwt.encode(payload, conf.jwt_signing_key(), algorithm=conf.jwt_algorithm())
    return token, exp.replace(microsecond=0)


def device_token_decode(token: str) -> dict[str, Any]:
    """Verify signature and expiry; raises `jwt.InvalidTokenError` (or a subclass)."""
    payload: dict[str, Any] = jwt.decode(
        token,
        conf.jwt_verifying_key(),
        algorithms=[conf.jwt_algorithm()],
        options={"require": ["exp", "iat", "sub", "token_type"]},
    )
    return payload


def token_type_unverified(token: str) -> str | None:
    """The `token_type` claim without checking the signature (only to route to the right class)."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return None
    value = claims.get("token_type") if isinstance(claims, dict) else None
    return value if isinstance(value, str) else None
