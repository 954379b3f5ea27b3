"""Typed accessors for the device task pool's settings (read in `coordinator/settings.py`)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from django.conf import settings

# How far behind "now" the per-device broadcast watermark stays: a broadcast whose transaction
# started before the watermark moved, and committed later, is still picked up as long as its
# transaction took less than this.
BROADCAST_MARGIN = timedelta(minutes=5)

# The django-q2 schedule that steps staged rollouts every minute (pool.rollouts).
ROLLOUT_SCHEDULE = "pool: step staged rollouts"


def journal_dir() -> Path | None:
    """`POOL_JOURNAL_DIR`: where the day files `YYYY-MM-DD.jsonl` are appended; None = no day log."""
    raw = settings.POOL_JOURNAL_DIR
    return Path(raw) if raw else None


def device_token_lifetime() -> timedelta:
    """`POOL_DEVICE_TOKEN_MINUTES`: lifetime of a device JWT (default one day)."""
    return timedelta(minutes=settings.POOL_DEVICE_TOKEN_MINUTES)


def online_threshold() -> timedelta:
    """`POOL_ONLINE_SECONDS`: a device is online while its last heartbeat is younger than this."""
    return timedelta(seconds=settings.POOL_ONLINE_SECONDS)


def broadcast_margin() -> timedelta:
    """`BROADCAST_MARGIN`."""
    return BROADCAST_MARGIN
