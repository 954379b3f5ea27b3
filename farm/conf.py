"""Task farm settings, read lazily from Django settings (coordinator/settings.py reads the environment).

Each is read once per process and remembered (several are read on every worker request, and a
setting that is missing from Django's settings costs an AttributeError inside `getattr` each time);
a change of Django settings (`override_settings`, pytest's `settings`) forgets them."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.signals import setting_changed

_read: dict[str, Any] = {}


def _forget(**kwargs: Any) -> None:
    _read.clear()


setting_changed.connect(_forget, dispatch_uid="farm.conf.forget")


def _raw(name: str, default: Any) -> Any:
    try:
        return _read[name]
    except KeyError:
        value = _read[name] = getattr(settings, name, default)
        return value


# A computing task whose worker has sent nothing (no PUT) for this long goes back to the pool.
# The taskfarm-worker client has no heartbeat: its only sign of life is `update()`, so the
# default is generous (one hour) to avoid handing out a long task that is still running twice;
# workers with long tasks should call `update()` more often than this.
DEFAULT_LEASE_SECONDS = 3600
# The most tasks one batch request may claim or complete.
DEFAULT_BATCH_MAX = 1000


def _int(name: str, default: int) -> int:
    value = _raw(name, default)
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def lease_seconds() -> int:
    """`FARM_LEASE_SECONDS`: seconds without an update after which a computing task is re-handed out."""
    return max(1, _int("FARM_LEASE_SECONDS", DEFAULT_LEASE_SECONDS))


def batch_max() -> int:
    """`FARM_BATCH_MAX`: the largest `count` a batch claim accepts."""
    return max(1, _int("FARM_BATCH_MAX", DEFAULT_BATCH_MAX))


def progress_interval() -> float:
    """`settings.FARM_PROGRESS_INTERVAL` (tests only; no environment variable): least seconds between two `msg` events of one run from one server process."""
    value = _raw("FARM_PROGRESS_INTERVAL", 0.5)
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return 0.5


def progress_trailing() -> bool:
    """`settings.FARM_PROGRESS_TRAILING` (tests only; no environment variable): send a run's last change inside a throttled window when it closes."""
    value = _raw("FARM_PROGRESS_TRAILING", "1")
    return str(value).strip().lower() not in ("0", "false", "no", "off", "")


# Cookie that tells a worker's later PUTs apart from those of other workers of the same user.
WORKER_COOKIE = "farm_worker"
