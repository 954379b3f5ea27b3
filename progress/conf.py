"""Settings of the `progress` app, read lazily from Django settings or the environment."""

from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings


def _raw(name: str, default: str) -> str:
    value = getattr(settings, name, None)
    if value is None:
        value = os.environ.get(name, "")
    value = str(value).strip()
    return value or default


def _bool(name: str, default: bool) -> bool:
    return _raw(name, "1" if default else "0").lower() in {"1", "true", "yes", "on"}


def _float(name: str, default: float) -> float:
    try:
        return float(_raw(name, str(default)))
    except ValueError:
        return default


def public() -> bool:
    """PROGRESS_PUBLIC: anyone, even anonymous, may read every event (localhost deployments)."""
    return _bool("PROGRESS_PUBLIC", False)


def socket_path() -> Path:
    """PROGRESS_SOCKET: the SOCK_SEQPACKET socket of the seed (default var/run/progress.sock)."""
    return Path(_raw("PROGRESS_SOCKET", str(Path(settings.VAR_DIR) / "run" / "progress.sock")))


def stream_socket_path() -> Path:
    """PROGRESS_STREAM_SOCKET: the newline-framed SOCK_STREAM socket (default var/run/progress-stream.sock)."""
    return Path(_raw("PROGRESS_STREAM_SOCKET", str(Path(settings.VAR_DIR) / "run" / "progress-stream.sock")))


def retention_seconds() -> float:
    """PROGRESS_RETENTION_SECONDS: how long events are kept for replay (and ended streams listed)."""
    return max(1.0, _float("PROGRESS_RETENTION_SECONDS", 3600.0))


def poll_interval() -> float:
    """PROGRESS_POLL_INTERVAL: seconds between event-table polls when there is no Redis."""
    return max(0.01, _float("PROGRESS_POLL_INTERVAL", 0.1))


def keepalive_seconds() -> float:
    """PROGRESS_KEEPALIVE_SECONDS: idle time after which the SSE stream sends a comment line."""
    return max(0.5, _float("PROGRESS_KEEPALIVE_SECONDS", 15.0))


def max_streams() -> int:
    """PROGRESS_MAX_STREAMS: socket stream uids are 0..N-1, reused round-robin (the seed used 256)."""
    return max(1, int(_float("PROGRESS_MAX_STREAMS", 1000)))


def transport() -> str:
    """PROGRESS_TRANSPORT: `layer` (channels-redis), `db` (event-table polling) or `auto`."""
    chosen = _raw("PROGRESS_TRANSPORT", "auto").lower()
    if chosen in {"layer", "db"}:
        return chosen
    backend = settings.CHANNEL_LAYERS.get("default", {}).get("BACKEND", "")
    return "layer" if backend.endswith("RedisChannelLayer") else "db"


SSE_RETRY_MS = 2000
MAX_NAME = 100
MAX_MESSAGE = 1000
QUEUE_SIZE = 10000
