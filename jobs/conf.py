"""Settings of the jobs app, read lazily from Django settings or the environment."""

from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings


def _setting(name: str, default: str) -> str:
    return str(getattr(settings, name, os.environ.get(name, default)))


def _int(name: str, default: int) -> int:
    try:
        return int(_setting(name, str(default)))
    except ValueError:
        return default


def _float(name: str, default: float) -> float:
    try:
        return float(_setting(name, str(default)))
    except ValueError:
        return default


def export_root() -> Path:
    """Directory that holds export and upload files (`EXPORT_ROOT`, default `<var>/exports`)."""
    raw = _setting("EXPORT_ROOT", "")
    root = Path(raw) if raw else Path(settings.VAR_DIR) / "exports"
    root.mkdir(parents=True, exist_ok=True)
    return root.resolve()


def heartbeat_seconds() -> float:
    """How often a running job touches its heartbeat (`JOBS_HEARTBEAT_SECONDS`, default 5)."""
    return _float("JOBS_HEARTBEAT_SECONDS", 5.0)


def stale_seconds() -> float:
    """A `started` job whose heartbeat is older than this is recovered (`JOBS_STALE_SECONDS`, default 30)."""
    return _float("JOBS_STALE_SECONDS", 30.0)


def sweep_seconds() -> float:
    """How often each cluster's broker runs the recovery sweep (`JOBS_SWEEP_SECONDS`, default 5)."""
    return _float("JOBS_SWEEP_SECONDS", 5.0)


def listen_timeout() -> float:
    """Longest LISTEN wait before a fallback poll of the queue (`JOBS_LISTEN_TIMEOUT`, default 5 s)."""
    return _float("JOBS_LISTEN_TIMEOUT", 5.0)


def default_timeout() -> int:
    """Timeout of a job type that declares none (`JOBS_DEFAULT_TIMEOUT`, default 300 s)."""
    return _int("JOBS_DEFAULT_TIMEOUT", 300)


def token_expire_seconds() -> int:
    """Lifetime of pytasks tokens from `GET /token` (`JOBS_TOKEN_EXPIRE_SEC`; 0 = no expiry)."""
    return _int("JOBS_TOKEN_EXPIRE_SEC", 3600)


def extra_modules() -> list[str]:
    """Extra modules holding `@job` functions, comma-separated (`JOBS_EXTRA_MODULES`)."""
    return [m.strip() for m in _setting("JOBS_EXTRA_MODULES", "").split(",") if m.strip()]


def example_pack() -> bool:
    """Register pytasks' example pack `test.main.*` (`JOBS_EXAMPLE_PACK`, default on)."""
    return _setting("JOBS_EXAMPLE_PACK", "1").strip().lower() not in {"0", "false", "no", "off"}


def upload_max_bytes() -> int:
    """Largest file accepted by `POST /v1/files` (`JOBS_UPLOAD_MAX_BYTES`, default 100 MB)."""
    return _int("JOBS_UPLOAD_MAX_BYTES", 100 * 1024 * 1024)
