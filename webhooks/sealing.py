"""Webhook signing secrets at rest: encrypted with Fernet (`cryptography`: AES-128-CBC with an
HMAC-SHA256 tag) under keys from WEBHOOKS_SECRET_KEYS (default: DJANGO_SECRET_KEY).

Each delivery is signed with the secret itself, so it cannot be stored as a hash; sealed, a copy of
the database (a backup, a dump, a read-only SQL hole) no longer hands out every subscriber's
signing secret. The first key seals; every key on the list unseals, so a key is replaced by putting
the new one first and keeping the old one until the secrets sealed with it were rotated."""

from __future__ import annotations

import base64
import hashlib
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings

from webhooks.errors import SecretUnreadableError


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    # Fernet wants 32 random bytes; the configured keys are long random strings of any shape
    # (DJANGO_SECRET_KEY), so each is hashed to that size, with a label that keeps this use apart.
    return MultiFernet(
        [
            Fernet(base64.urlsafe_b64encode(hashlib.sha256(b"coordinator.webhooks.secret\0" + key.encode()).digest()))
            for key in keys
        ]
    )


def _keys() -> MultiFernet:
    return _fernet(tuple(settings.WEBHOOKS_SECRET_KEYS))


def secret_seal(secret: str) -> str:
    """The secret as stored: a Fernet token under the first key."""
    return _keys().encrypt(secret.encode()).decode()


def secret_unseal(sealed: str) -> str:
    """The secret a sealed token holds; SecretUnreadableError when no configured key opens it."""
    try:
        return _keys().decrypt(sealed.encode()).decode()
    except InvalidToken as exc:
        raise SecretUnreadableError() from exc
