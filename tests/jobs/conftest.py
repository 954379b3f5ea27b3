from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.db import connection

import tests.jobs.sample_jobs  # noqa: F401 - registers the test job functions
from jobs.models import Job
from tests.live import BIN, ROOT, server_env

# Fast recovery for processes started by tests: stale after 2 s (heartbeat and sweep every 1/3 s).
CLUSTER_ENV = {
    "JOBS_EXTRA_MODULES": "tests.jobs.sample_jobs",
    "JOBS_STALE_SECONDS": "2",
    "Q_WORKERS": "2",
}


@pytest.fixture(autouse=True)
def export_root(tmp_path: Path, settings: pytest.FixtureRequest) -> Path:
    root = tmp_path / "exports"
    root.mkdir()
    settings.EXPORT_ROOT = str(root)  # type: ignore[attr-defined]
    return root


def wait_for(condition: Callable[[], bool], timeout: float = 60.0, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def job_status(job_id: int) -> str:
    connection.close()  # see the cluster's commits, not a stale snapshot
    return Job.objects.get(pk=job_id).status


@contextmanager
def run_cluster(export_root: Path, *args: str, **extra: str) -> Iterator[subprocess.Popen[bytes]]:
    """A real `manage.py qcluster [args]` process on the test database, in its own process group."""
    env = server_env(**{**CLUSTER_ENV, "EXPORT_ROOT": str(export_root), **extra})
    # Logs go to a file next to the exports: a pipe nobody reads would fill up and block the cluster.
    log = open(export_root.parent / "qcluster.log", "ab")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [str(BIN / "python"), "manage.py", "qcluster", *args],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=log,
        stderr=log,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        else:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.close()


@pytest.fixture(autouse=True)
def _fast_hashers(settings: pytest.FixtureRequest) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # type: ignore[attr-defined]
