"""Device tokens: `token_type: "device"`, `sub` and `device_id`, `iat`, `exp`, `jti`
(signed and verified by `coordinator.tokens`, like every other kind)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from django.utils import timezone
from django.utils.crypto import salted_hmac

from coordinator.tokens import TokenError, TokenKind, token_issue, token_verify
from pool import conf


def device_stamp(secret_hash: str) -> str:
    """A short digest of the device's secret hash: its tokens stop working (are revoked) when the
    secret is replaced (the admin's *Issue a new secret*)."""
    return salted_hmac("pool.tokens.stamp", secret_hash).hexdigest()[:16]


def device_token_encode(*, device_id: int, now: datetime | None = None) -> tuple[str, datetime]:
    """A signed device token and its expiry."""
    from pool.models import Device

    issued = now or timezone.now()
    lifetime = conf.device_token_lifetime()
    secret_hash = Device.objects.filter(pk=device_id).values_list("secret_hash", flat=True).first() or ""
    token = token_issue(
        TokenKind.DEVICE,
        {"sub": str(device_id), "device_id": device_id, "jti": uuid.uuid4().hex, "stamp": device_stamp(secret_hash)},
        lifetime,
        issued_at=issued,
    )
    return token, (issued + lifetime).replace(microsecond=0)


def device_token_decode(token: str) -> dict[str, Any]:
    """Verify signature, kind and expiry; raises `TokenError` (`TokenExpiredError` when expired)."""
    payload = token_verify(token, TokenKind.DEVICE)
    if not all(claim in payload for claim in ("exp", "iat", "sub")):
        raise TokenError("The device token lacks a required claim.")
    return payload
