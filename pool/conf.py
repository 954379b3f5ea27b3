"""Typed, lazily read settings of the device task pool (settings first, then the environment)."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings


def _get(name: str, default: Any) -> Any:
    return getattr(settings, name, os.environ.get(name, default))


def journal_dir() -> Path | None:
    """`POOL_JOURNAL_DIR`: where the day files `YYYY-MM-DD.jsonl` are appended; unset = no journal."""
    raw = str(_get("POOL_JOURNAL_DIR", "") or "").strip()
    return Path(raw).expanduser() if raw else None


def device_token_lifetime() -> timedelta:
    """`POOL_DEVICE_TOKEN_MINUTES`: lifetime of a device JWT (default one day)."""
    return timedelta(minutes=int(_get("POOL_DEVICE_TOKEN_MINUTES", 24 * 60)))


def online_threshold() -> timedelta:
    """`POOL_ONLINE_SECONDS`: a device is online when its last heartbeat is younger than this."""
    return timedelta(seconds=int(_get("POOL_ONLINE_SECONDS", 120)))


def broadcast_margin() -> timedelta:
    """`POOL_BROADCAST_MARGIN_SECONDS`: how far behind "now" the per-device broadcast watermark stays.

    A broadcast committed late (its transaction started before the watermark moved) is still
    picked up as long as its transaction took less than this.
    """
    return timedelta(seconds=int(_get("POOL_BROADCAST_MARGIN_SECONDS", 300)))


def jwt_algorithm() -> str:
    return str(getattr(settings, "JWT_ALGORITHM", "HS256"))


def jwt_signing_key() -> str:
    return str(getattr(settings, "JWT_SIGNING_KEY", settings.SECRET_KEY))


def jwt_verifying_key() -> str:
    return str(getattr(settings, "JWT_VERIFYING_KEY", "") or jwt_signing_key())
