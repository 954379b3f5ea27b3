"""`manage.py serve` really starts the platform as one supervised group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import requests

from tests.live import ROOT, free_port, server_env, wait_for_http

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def start_serve(tmp_path: Path, port: int) -> subprocess.Popen[bytes]:
    env = server_env(COORDINATOR_VAR_DIR=str(tmp_path), Q_WORKERS="1")
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 - the child keeps writing to it
    return subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--port", str(port), "--workers", "1"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )


def wait_for_output(tmp_path: Path, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in (tmp_path / "serve.log").read_text(errors="replace"):
        assert time.monotonic() < deadline, f"{text!r} never appeared in the serve output"
        time.sleep(0.2)


def stop_and_read(proc: subprocess.Popen[bytes], tmp_path: Path, sig: int | None = signal.SIGTERM) -> str:
    if sig is not None:
        proc.send_signal(sig)
    proc.wait(timeout=60)
    return (tmp_path / "serve.log").read_text(errors="replace")


def descendants(proc: subprocess.Popen[bytes]) -> list[psutil.Process]:
    return psutil.Process(proc.pid).children(recursive=True)


def test_serve_answers_on_one_address_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    proc = start_serve(tmp_path, port)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_http(f"{base}/healthz", timeout=60, proc=proc)
        wait_for_output(tmp_path, "Q Cluster")  # the job cluster is up too
        wait_for_output(tmp_path, "running.")
        deadline = time.monotonic() + 30
        while requests.get(f"{base}/healthz", timeout=5).status_code == 502 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert requests.get(f"{base}/healthz", timeout=5).json() == {"status": "ok", "database": "ok"}
        login = requests.get(f"{base}/admin/login/", timeout=5)
        assert login.status_code == 200 and "Coordinator" in login.text
        # Plain HTTP is served by gunicorn; WebSocket paths by daphne (Twisted's Server header).
        assert "gunicorn" in requests.get(f"{base}/healthz", timeout=5).headers.get("Server", "")
        ws = requests.get(f"{base}/ws/nothing-here/", timeout=5)
        assert "gunicorn" not in ws.headers.get("Server", "")
        children = descendants(proc)
        names = " ".join(" ".join(child.cmdline()) for child in children if child.is_running())
        assert "gunicorn" in names and "daphne" in names and "qcluster" in names
    finally:
        output = stop_and_read(proc, tmp_path)
    assert proc.returncode == 0, output[-3000:]
    assert "SIGKILL" not in output, output[-3000:]  # every process stopped by itself, cleanly
    for line_start in ("web", "asgi", "front", "jobs"):
        assert any(line.split(" ", 1)[-1].startswith(line_start) for line in output.splitlines()), output[-2000:]
    assert not [child for child in children if child.is_running() and child.status() != psutil.STATUS_ZOMBIE]


def test_serve_stops_everything_when_one_process_dies(tmp_path: Path) -> None:
    port = free_port()
    proc = start_serve(tmp_path, port)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", timeout=60, proc=proc)
        wait_for_output(tmp_path, "running.")
        gunicorn_master = next(
            child for child in descendants(proc)
            if "gunicorn" in " ".join(child.cmdline()) and child.parent() and "gunicorn" not in " ".join(child.parent().cmdline())
        )
        children = descendants(proc)
        os.kill(gunicorn_master.pid, signal.SIGKILL)
        output = stop_and_read(proc, tmp_path, sig=None)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0, output[-3000:]
    assert "web stopped" in output or ("web (pid" in output and "died" in output), output[-3000:]
    assert "SIGKILL" not in output, output[-3000:]
    time.sleep(0.5)
    alive = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert not alive, [c.cmdline() for c in alive]
