"""Real server processes for end-to-end and concurrency tests.

`run_wsgi_server()` starts granian (the production WSGI server) against the *test* database of
the running pytest session, so data created by a test is visible to the server and the other
way round. Use it with the `transactional_db` fixture (data must be committed to be seen).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import requests
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_database_url() -> str:
    """The DATABASE_URL of the database this test session actually uses."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    user = quote(db.get("USER") or "")
    password = quote(db.get("PASSWORD") or "")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    return f"postgres://{auth}{host}:{port}/{db['NAME']}"


def server_env(**extra: str) -> dict[str, str]:
    """Environment for a child process that must use this session's test database and settings."""
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "coordinator.settings",
            "DATABASE_URL": test_database_url(),
            "COORDINATOR_VAR_DIR": str(settings.VAR_DIR),
            "DJANGO_SECRET_KEY": settings.SECRET_KEY,
            "DJANGO_DEBUG": "0",
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
            # Live servers of the suite: see tests/conftest.py (UNLIMITED_CREDENTIALS).
            "CREDENTIAL_RATE_PER_ADDRESS": "100000/min",
            "CREDENTIAL_RATE_PER_ACCOUNT": "100000/min",
            "ANONYMOUS_JOB_RATE": "100000/min",
        }
    )
    env.update(extra)
    return env


def wait_for_http(url: str, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering {url}")
        try:
            requests.get(url, timeout=2)
            return
        except requests.RequestException as exc:
            last_error = exc
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout}s: {last_error}")


@contextmanager
def run_wsgi_server(workers: int = 2, threads: int = 1, **extra_env: str) -> Iterator[str]:
    """Start granian on a free port, as production runs it (`threads` Python threads per worker,
    keep-alive on); yields the base URL (`http://127.0.0.1:PORT`)."""
    from coordinator.management.commands.serve import granian_argv

    port = free_port()
    proc = subprocess.Popen(
        granian_argv(port=port, workers=workers, threads=threads, log_level="warning"),
        cwd=ROOT,
        env=server_env(**extra_env),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/healthz", proc=proc)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
