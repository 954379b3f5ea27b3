"""Serving shapes: requests/s of a trivial authenticated endpoint under each server.

Measures, in one run and interleaved (so machine noise hits every shape alike):
  * granian  — granian, one worker process per core, one Python thread each, keep-alive on: how
               production serves plain HTTP (behind nginx, or `serve --behind-proxy`);
  * gunicorn — gunicorn, sync workers (one per core), which close every connection: the server
               granian replaced, kept as the comparison baseline;
  * asgi     — daphne alone: what plain HTTP would cost if the ASGI server served everything;
  * embedded — `manage.py serve`'s front door splicing to granian (keep-alive off there, so every
               request is a new connection): the one-address default.
The endpoint is `GET /auth/me/` with a user JWT (authentication + one indexed query). Load comes
from wrk (Debian package `wrk`, which keeps connections alive where the server allows) on
loopback. Figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from bench.report import median, write_section
from coordinator.management.commands.serve import granian_argv
from tests.live import free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def wait_ok(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} never answered 200")


def stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def wrk(url: str, token: str, seconds: int, connections: int) -> tuple[float, float]:
    """(requests/s, p99 latency ms) of one wrk run; non-2xx answers make the run fail."""
    out = subprocess.run(
        [
            "wrk",
            "-t",
            "2",
            "-c",
            str(connections),
            "-d",
            f"{seconds}s",
            "--latency",
            "-H",
            f"Authorization: Bearer {token}",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if "Non-2xx" in out:
        raise SystemExit(f"{url} answered errors under load:\n{out}")
    if "Socket errors" in out and re.search(r"(connect|read|write|timeout) [1-9]", out):
        print("    note: " + "; ".join(line for line in out.splitlines() if "Socket errors" in line))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99_match = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    p99 = float("nan")
    if p99_match:
        value, unit = float(p99_match.group(1)), p99_match.group(2)
        p99 = value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
    return rps, p99


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short runs, one round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds = 1, 3
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")

    workdir = Path(tempfile.mkdtemp(prefix="coordinator-bench-serving-"))
    workers = os.cpu_count() or 2
    env = dict(os.environ)
    env.update(
        {
            "COORDINATOR_VAR_DIR": str(workdir),
            "DJANGO_DEBUG": "0",
            # All clients sign in from this one host (docs/security.md): no credential limit here.
            "CREDENTIAL_RATE_PER_ADDRESS": "1000000/min",
            "CREDENTIAL_RATE_PER_ACCOUNT": "1000000/min",
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.setdefault("DATABASE_URL", f"sqlite:///{workdir / 'bench.sqlite3'}")
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    subprocess.run(
        [*manage, "createuser", "bench@example.com", "--role", "user", "--password", "bench-pass-1234"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )

    ports = {"granian": free_port(), "gunicorn": free_port(), "asgi": free_port(), "embedded": free_port()}
    commands = {
        "granian": granian_argv(port=ports["granian"], workers=workers, log_level="warning"),
        "gunicorn": [
            str(BIN / "gunicorn"),
            "coordinator.wsgi:application",
            "--bind",
            f"127.0.0.1:{ports['gunicorn']}",
            "--workers",
            str(workers),
            "--no-control-socket",
            "--log-level",
            "warning",
        ],
        "asgi": [
            str(BIN / "daphne"),
            "--bind",
            "127.0.0.1",
            "--port",
            str(ports["asgi"]),
            "coordinator.asgi:application",
        ],
        "embedded": [*manage, "serve", "--port", str(ports["embedded"]), "--workers", str(workers), "--no-qcluster"],
    }
    procs: dict[str, subprocess.Popen[bytes]] = {}
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    try:
        # One shape runs at a time: the others are started only for their own turn, so an idle
        # server never competes for the two cores.
        token = None
        for round_no in range(args.rounds):
            for name, command in commands.items():
                procs[name] = subprocess.Popen(
                    command,
                    cwd=ROOT,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
                base = f"http://127.0.0.1:{ports[name]}"
                wait_ok(f"{base}/healthz")
                if token is None:
                    token = requests.post(
                        f"{base}/auth/token/", json={"email": "bench@example.com", "password": "bench-pass-1234"}
                    ).json()["access"]
                assert requests.get(f"{base}/auth/me/", headers={"Authorization": f"Bearer {token}"}).status_code == 200
                wrk(f"{base}/auth/me/", token, 1, args.connections)  # warm-up
                rps, p99 = wrk(f"{base}/auth/me/", token, args.seconds, args.connections)
                results[name].append((rps, p99))
                print(f"round {round_no + 1} {name:9s} {rps:8.0f} req/s  p99 {p99:6.1f} ms", flush=True)
                stop(procs[name])
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)

    baseline_rps = median([r for r, _ in results["gunicorn"]])
    rows = []
    labels = {
        "granian": f"granian, {workers} workers x 1 thread, keep-alive (production plain HTTP)",
        "gunicorn": f"gunicorn, {workers} sync workers (the previous server, baseline)",
        "asgi": "daphne alone (ASGI for everything)",
        "embedded": "`manage.py serve` front door → granian, keep-alive off (embedded default)",
    }
    for name in commands:
        rps = median([r for r, _ in results[name]])
        p99 = median([p for _, p in results[name]])
        rows.append(f"| {labels[name]} | {rps:,.0f} | {p99:.1f} | {rps / baseline_rps:.2f} |")
    db = "SQLite" if env["DATABASE_URL"].startswith("sqlite") else "PostgreSQL"
    markdown = "\n".join(
        [
            "## Serving shapes (issue 2)",
            "",
            f"`GET /auth/me/` with a user JWT, wrk {args.connections} connections, {args.seconds} s per run, "
            f"{args.rounds} interleaved round(s), medians; database {db}. Command: `./dev bench serving`.",
            "",
            "| shape | requests/s | p99 ms | vs gunicorn |",
            "|---|---:|---:|---:|",
            *rows,
            "",
            "Plain HTTP therefore goes to granian; daphne serves only `/ws/` and `/progress/events`.",
        ]
    )
    print(markdown)
    write_section("serving", markdown)


if __name__ == "__main__":
    main()
