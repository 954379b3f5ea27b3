"""Typed accessors for the progress app's settings (read in `coordinator/settings.py`)."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

# Seconds between event-table polls by each ASGI process when there is no Redis: the delay a
# reader sees at most, against one cheap indexed query per process per interval.
POLL_INTERVAL_SECONDS = 0.1
# Idle seconds after which the SSE stream sends a comment line, so proxies keep it open.
KEEPALIVE_SECONDS = 15.0
SSE_RETRY_MS = 2000
MAX_NAME = 100
MAX_MESSAGE = 1000
QUEUE_SIZE = 10000


def public() -> bool:
    """`PROGRESS_PUBLIC`: anyone, even anonymous, may read every event (localhost deployments)."""
    return bool(settings.PROGRESS_PUBLIC)


def socket_path() -> Path:
    """`PROGRESS_SOCKET`: the SOCK_SEQPACKET socket of the seed (default var/run/progress.sock)."""
    return Path(settings.PROGRESS_SOCKET)


def stream_socket_path() -> Path:
    """`PROGRESS_STREAM_SOCKET`: the newline-framed SOCK_STREAM socket (default var/run/progress-stream.sock)."""
    return Path(settings.PROGRESS_STREAM_SOCKET)


def retention_seconds() -> float:
    """`PROGRESS_RETENTION_SECONDS`: how long events are kept for replay (and ended streams listed)."""
    return float(settings.PROGRESS_RETENTION_SECONDS)


def poll_interval() -> float:
    """`POLL_INTERVAL_SECONDS` (a function, so that tests can shorten it)."""
    return POLL_INTERVAL_SECONDS


def keepalive_seconds() -> float:
    """`KEEPALIVE_SECONDS` (a function, so that tests can shorten it)."""
    return KEEPALIVE_SECONDS


def max_streams() -> int:
    """`PROGRESS_MAX_STREAMS`: socket stream uids are 0..N-1, reused round-robin (the seed used 256)."""
    return int(settings.PROGRESS_MAX_STREAMS)


def streams_per_user() -> int:
    """`PROGRESS_STREAMS_PER_USER`: open streams (SSE and WebSocket) of one user, across all processes."""
    return int(settings.PROGRESS_STREAMS_PER_USER)


def lease_seconds() -> float:
    """How long a stream's slot stays taken without a renewal: three keep-alives, so one late
    renewal does not cost a live stream its slot, and a dead process's slots come back soon."""
    return 3 * keepalive_seconds()


def operations_live_seconds() -> float:
    """`OPERATIONS_LIVE_SECONDS`: the least interval between two live dashboard overviews."""
    return float(settings.OPERATIONS_LIVE_SECONDS)


def transport() -> str:
    """`layer` (channels-redis) when Redis carries the channel layer, else `db` (event-table polling)."""
    backend = settings.CHANNEL_LAYERS.get("default", {}).get("BACKEND", "")
    return "layer" if backend.endswith("RedisChannelLayer") else "db"
