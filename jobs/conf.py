"""Typed accessors for the jobs app's settings (read in `coordinator/settings.py`)."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

# A running job touches its heartbeat, and each cluster's broker runs the recovery sweep, this many
# times per `JOBS_STALE_SECONDS`: often enough that a live job is never taken for a lost one, rare
# enough that the heartbeats stay a small share of the database's writes.
BEATS_PER_STALE_PERIOD = 6
# Each cluster's broker writes the time of its last sweep here: the clusters' sign of life.
SWEEP_SEEN_KEY = "jobs:last_sweep"
# Longest LISTEN wait before the broker polls the queue anyway (a NOTIFY lost with a dropped
# connection is then noticed within this delay). django-q2's pusher sees the cluster's stop only
# between two waits, so this also bounds how long a stopping cluster lingers: it must stay well
# under `serve`'s grace period (coordinator.serving.group.STOP_GRACE_SECONDS) or the cluster is
# killed mid-stop.
LISTEN_TIMEOUT_SECONDS = 1.0


def export_root() -> Path:
    """`EXPORT_ROOT`: the directory that holds export and upload files (default `<var>/exports`)."""
    root = Path(settings.EXPORT_ROOT)
    root.mkdir(parents=True, exist_ok=True)
    return root.resolve()


def stale_seconds() -> float:
    """`JOBS_STALE_SECONDS`: a `started` job whose heartbeat is older than this is recovered."""
    return float(settings.JOBS_STALE_SECONDS)


def heartbeat_seconds() -> float:
    """How often a running job touches its heartbeat."""
    return stale_seconds() / BEATS_PER_STALE_PERIOD


def stall_seconds() -> float:
    """`JOBS_STALL_SECONDS`: how long due jobs may wait with no worker taking any."""
    return float(settings.JOBS_STALL_SECONDS)


def sweep_seconds() -> float:
    """How often each cluster's broker runs the recovery sweep."""
    return stale_seconds() / BEATS_PER_STALE_PERIOD


def listen_timeout() -> float:
    """Longest LISTEN wait before a fallback poll of the queue."""
    return min(LISTEN_TIMEOUT_SECONDS, sweep_seconds())


def default_timeout() -> int:
    """`JOBS_DEFAULT_TIMEOUT`: timeout in seconds of a job type that declares none."""
    return int(settings.JOBS_DEFAULT_TIMEOUT)


def token_expire_seconds() -> int:
    """`JOBS_TOKEN_EXPIRE_SEC`: lifetime of pytasks tokens from `GET /token` (0 = no expiry)."""
    return int(settings.JOBS_TOKEN_EXPIRE_SEC)


def extra_modules() -> list[str]:
    """`JOBS_EXTRA_MODULES`: extra modules holding `@job` functions (besides each app's `jobs.py`)."""
    return list(settings.JOBS_EXTRA_MODULES)


def example_pack() -> bool:
    """`JOBS_EXAMPLE_PACK`: register pytasks' example pack `test.main.*`."""
    return bool(settings.JOBS_EXAMPLE_PACK)


def upload_max_bytes() -> int:
    """`JOBS_UPLOAD_MAX_BYTES`: the largest file accepted by `POST /v1/files`."""
    return int(settings.JOBS_UPLOAD_MAX_BYTES)


def keep_days() -> float:
    """`JOBS_KEEP_DAYS`: days a finished job is kept."""
    return float(settings.JOBS_KEEP_DAYS)


def files_keep_days() -> float:
    """`JOBS_FILES_KEEP_DAYS`: days an export or upload file is kept."""
    return float(settings.JOBS_FILES_KEEP_DAYS)
