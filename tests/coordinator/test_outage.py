"""A database outage under a live server: every dialect answers 503 with Retry-After (never 500),
and the platform answers normally again once the database is back (issue 16, item 8).

The database is a throwaway PostgreSQL cluster on a port of its own (`pg_createcluster`), never the
shared one.
"""

from __future__ import annotations

import base64
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.live import ROOT, free_port, run_wsgi_server, server_env

pytestmark = [pytest.mark.slow]

PG_VERSION = (
    next(iter(sorted(p.name for p in Path("/usr/lib/postgresql").glob("*"))), "")
    if Path("/usr/lib/postgresql").is_dir()
    else ""
)


@pytest.fixture(scope="module")
def throwaway_postgres() -> Iterator[tuple[str, str]]:
    """One cluster for the module (creating one takes seconds); each test leaves it running."""
    if not shutil.which("pg_createcluster") or not PG_VERSION:
        pytest.skip("needs Debian's PostgreSQL cluster tools")
    from django.conf import settings

    if settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
        # Nothing here uses the suite's database: the same test twice would prove nothing more.
        pytest.skip("brings its own PostgreSQL cluster: runs once, in the SQLite pass of the suite")
    name, port = f"outage{secrets.token_hex(3)}", free_port()
    subprocess.run(
        ["pg_createcluster", PG_VERSION, name, "-p", str(port), "--start", "--", "--auth=trust"],
        check=True,
        capture_output=True,
    )
    try:
        yield name, f"postgres://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(["pg_dropcluster", "--stop", PG_VERSION, name], capture_output=True)


def _ctl(name: str, action: str) -> None:
    subprocess.run(["pg_ctlcluster", PG_VERSION, name, action, "-m", "fast"], check=True, capture_output=True)


def test_a_database_outage_is_a_503_in_every_dialect_and_passes(throwaway_postgres: tuple[str, str]) -> None:
    name, url = throwaway_postgres
    env = server_env(DATABASE_URL=url, REDIS_URL="")
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    subprocess.run(
        [sys.executable, "manage.py", "createuser", "ops@example.com", "--password", "a-long-secret-1"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    basic = "Basic " + base64.b64encode(b"ops@example.com:a-long-secret-1").decode()
    with run_wsgi_server(workers=1, DATABASE_URL=url, REDIS_URL="") as live:
        token = requests.post(
            f"{live}/auth/token/", json={"email": "ops@example.com", "password": "a-long-secret-1"}, timeout=10
        ).json()["access"]
        bearer = {"Authorization": f"Bearer {token}"}
        assert requests.get(f"{live}/api/runs", headers={"Authorization": basic}, timeout=10).status_code == 200
        _ctl(name, "stop")
        try:
            answers = {
                "envelope": requests.post(
                    f"{live}/auth/token/", json={"email": "ops@example.com", "password": "x"}, timeout=20
                ),
                "farm": requests.get(f"{live}/api/runs", headers={"Authorization": basic}, timeout=20),
                "pytasks": requests.post(f"{live}/task", json={"type": "noop", "args": {}}, timeout=20),
                # A BookLogr endpoint of the seed (GET /v1/tasks, the job list, speaks the envelope).
                "booklogr": requests.get(f"{live}/v1/tasks/1", headers=bearer, timeout=20),
                "health": requests.get(f"{live}/healthz", timeout=20),
            }
        finally:
            _ctl(name, "start")
        for dialect, answer in answers.items():
            assert answer.status_code == 503, (dialect, answer.status_code, answer.text[:300])
        for dialect in ("envelope", "farm", "pytasks", "booklogr"):
            assert int(answers[dialect].headers["Retry-After"]) >= 1, dialect
        assert answers["envelope"].json()["code"] == "database_unavailable"
        assert answers["farm"].json()["code"] == "database_unavailable"
        assert set(answers["pytasks"].json()) == {"message"}
        assert set(answers["booklogr"].json()) == {"error", "message"}
        # Back: the first requests may still meet a connection the outage killed (a 503 again),
        # then every request is answered as usual.
        codes = [
            requests.get(f"{live}/api/runs", headers={"Authorization": basic}, timeout=20).status_code for _ in range(4)
        ]
        assert codes[-1] == 200 and set(codes) <= {200, 503}, codes


def test_jobs_accepted_around_a_database_restart_all_run_exactly_once(
    throwaway_postgres: tuple[str, str], tmp_path: Path
) -> None:
    """PostgreSQL restarts while a real cluster runs jobs (issue 16, item 1): every job the API
    accepted reaches `SUCCESS`, each exactly once; a worker's dead persistent connection no
    longer loses the job it fetched first after the restart."""
    import os
    import signal
    import time

    name, url = throwaway_postgres
    env = {
        "DATABASE_URL": url,
        "REDIS_URL": "",
        "JOBS_EXTRA_MODULES": "tests.jobs.sample_jobs",
        "JOBS_STALE_SECONDS": "2",
        "Q_WORKERS": "2",
    }
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=server_env(**env), check=True)
    marker = tmp_path / "ran"
    log = open(tmp_path / "qcluster.log", "wb")  # noqa: SIM115 - closed below
    cluster = subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"],
        cwd=ROOT,
        env=server_env(**env),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    accepted: list[str] = []
    try:
        with run_wsgi_server(workers=1, **env) as live:

            def submit(count: int) -> None:
                for _ in range(count):
                    deadline = time.monotonic() + 60
                    while True:  # a client retries a 503 (the outage), as Retry-After tells it
                        answer = requests.post(
                            f"{live}/task", json={"type": "tests.record", "args": {"path": str(marker)}}, timeout=20
                        )
                        if answer.status_code == 200:
                            accepted.append(answer.json()["id"])
                            break
                        assert answer.status_code == 503, answer.text[:300]
                        assert time.monotonic() < deadline, "the API never accepted again"
                        time.sleep(0.5)

            def statuses() -> list[str]:
                return [requests.get(f"{live}/task/{job}", timeout=20).json()["status"] for job in accepted]

            submit(10)
            _ctl(name, "restart")
            submit(10)
            deadline = time.monotonic() + 180
            while set(current := statuses()) != {"SUCCESS"}:
                assert time.monotonic() < deadline, current
                time.sleep(0.5)
    finally:
        cluster.send_signal(signal.SIGTERM)
        try:
            cluster.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(cluster.pid, signal.SIGKILL)
            cluster.wait()
        log.close()
    assert len(accepted) == 20
    assert len(marker.read_text().splitlines()) == 20  # each job ran once
