"""Typed access to the farm's settings (coordinator/settings.py reads and checks the environment)."""

from __future__ import annotations

from django.conf import settings

# Cookie that tells a worker's later PUTs apart from those of other workers of the same user.
WORKER_COOKIE = "farm_worker"


def lease_seconds() -> int:
    """Seconds without an update after which a computing task's lease lapses."""
    return int(settings.FARM_LEASE_SECONDS)


def batch_max() -> int:
    """The most tasks one batch claim hands out."""
    return int(settings.FARM_BATCH_MAX)


def max_attempts() -> int:
    """Hand-outs after which a task whose lease lapsed again fails."""
    return int(settings.FARM_MAX_ATTEMPTS)


def progress_interval() -> float:
    """Least seconds between two `msg` events of one run from one server process."""
    return float(settings.FARM_PROGRESS_INTERVAL)


def progress_trailing() -> bool:
    """Whether a run's last change inside a throttled window is sent when the window closes."""
    return bool(settings.FARM_PROGRESS_TRAILING)


# The name of the django-q2 schedule that returns lapsed leases to waiting (farm.apps).
LEASE_SWEEP = "farm: return expired leases to waiting"
