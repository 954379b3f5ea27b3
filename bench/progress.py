"""Live progress benchmark: `python -m bench.progress [--quick]`.

S producer connections on the SEQPACKET socket send E events/s in total (one process), through
`manage.py progress_listen`, to C SSE clients on one daphne process (`/progress/events`, raw
HTTP readers in another process). Per transport, in one run:
  * channels-redis (`REDIS_URL`, PostgreSQL database) — the production shape;
  * the embedded default (SQLite, no Redis: the ASGI process polls the event table every
    PROGRESS_POLL_INTERVAL = 0.1 s).
For each rate: delivery latency (send → parsed by the client) p50/p95 over all clients that stay
connected, events lost by any of them, and events lost by one client that drops its connection
halfway and comes back 0.5 s later with `Last-Event-ID`. "Sustained" = no client lost anything and
every event arrived within the run. Figures go to docs/benchmarks.md (section progress).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.report import median, percentile, write_section
from tests.live import free_port

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
BIN = Path(PY).parent
PG_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
SECRET = "bench-secret-key-not-for-production-0123456789"


@dataclass
class Row:
    transport: str
    rate: int
    sent: int
    clients: int
    p50_ms: float
    p95_ms: float
    max_ms: float
    lost: int
    lost_reconnect: int

    @property
    def sustained(self) -> bool:
        return self.sent > 0 and self.lost == 0 and self.lost_reconnect == 0


@contextmanager
def pg_database() -> Iterator[str]:
    import psycopg

    name = f"bench_progress_{os.getpid()}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def platform(var: Path, database_url: str, redis_url: str | None) -> Iterator[tuple[str, Path]]:
    """Migrate, then run daphne and the socket listener; yields (SSE URL, socket path)."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(
        {
            "DATABASE_URL": database_url,
            "COORDINATOR_VAR_DIR": str(var),
            "DJANGO_SECRET_KEY": SECRET,
            "DJANGO_DEBUG": "0",
            # All clients sign in from this one host (docs/security.md): no credential limit here.
            "CREDENTIAL_RATE_PER_ADDRESS": "1000000/min",
            "CREDENTIAL_RATE_PER_ACCOUNT": "1000000/min",
            "PROGRESS_PUBLIC": "true",
            "PYTHONPATH": str(ROOT),
            "LOG_LEVEL": "WARNING",
        }
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
    subprocess.run([PY, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
    port = free_port()
    log = open(var / "servers.log", "ab")
    daphne = subprocess.Popen(
        [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(port), "coordinator.asgi:application"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=log,
    )
    listener = subprocess.Popen([PY, "manage.py", "progress_listen"], cwd=ROOT, env=env, stdout=log, stderr=log)
    sock = var / "run" / "progress.sock"
    try:
        import requests

        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                if sock.exists():
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("daphne or the listener did not start; see servers.log")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/progress/events", sock
    finally:
        for proc in (listener, daphne):
            proc.terminate()
        for proc in (listener, daphne):
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()


def measure(transport: str, url: str, sock: Path, rate: int, streams: int, clients: int, seconds: float) -> Row:
    run = uuid.uuid4().hex[:8]
    readers = subprocess.Popen(
        [PY, "-m", "bench.progress_agents", "read", url, str(clients), str(seconds + 6), run, "1"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)  # readers connected and past their snapshot
    producer = subprocess.run(
        [PY, "-m", "bench.progress_agents", "produce", str(sock), str(streams), str(rate), str(seconds), run],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    sent = json.loads(producer.stdout)["sent"]
    out, _ = readers.communicate(timeout=seconds + 60)
    results: list[dict[str, Any]] = json.loads(out)
    steady = [r for r in results if not r["reconnects"]]
    latencies = [lat for r in steady for lat in r["latencies"]]
    lost = sum(sent - len(r["seqs"]) for r in steady)
    lost_reconnect = sum(sent - len(r["seqs"]) for r in results if r["reconnects"])
    row = Row(
        transport,
        rate,
        sent,
        clients,
        1000 * median(latencies) if latencies else float("nan"),
        1000 * percentile(latencies, 95),
        1000 * max(latencies, default=float("nan")),
        lost,
        lost_reconnect,
    )
    print(
        f"  {transport:9} {rate:5}/s sent={sent:6} p50={row.p50_ms:7.1f} ms p95={row.p95_ms:7.1f} ms "
        f"max={row.max_ms:7.1f} ms lost={lost} lost_after_reconnect={lost_reconnect}",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    args = parser.parse_args()
    if args.quick:
        rates, streams, clients, seconds = [100, 200], 4, 5, 2.0
    else:
        rates, streams, clients, seconds = [250, 500, 1000, 2000, 4000], 10, 50, 5.0
    rows: list[Row] = []
    notes: list[str] = []
    var_root = Path(tempfile.mkdtemp(prefix="bprg", dir="/tmp"))
    try:
        for transport in ("redis", "embedded"):
            var = var_root / transport
            var.mkdir()
            try:
                if transport == "redis":
                    context = pg_database()
                    database_url = context.__enter__()
                else:
                    context = None
                    database_url = f"sqlite:///{var / 'bench.sqlite3'}"
                try:
                    with platform(var, database_url, REDIS_URL if transport == "redis" else None) as (url, sock):
                        print(f"{transport}: {clients} SSE clients, {streams} socket producers", flush=True)
                        for rate in rates:
                            rows.append(measure(transport, url, sock, rate, streams, clients, seconds))
                finally:
                    if context is not None:
                        context.__exit__(None, None, None)
            except Exception as exc:  # a missing service skips its transport, and says so
                notes.append(f"{transport}: not measured ({exc.__class__.__name__}: {exc})")
                print(notes[-1], flush=True)
    finally:
        shutil.rmtree(var_root, ignore_errors=True)
    markdown = report(rows, notes, streams, clients, seconds, args.quick)
    print(markdown)
    write_section("progress", markdown)


def report(rows: list[Row], notes: list[str], streams: int, clients: int, seconds: float, quick: bool) -> str:
    lines = [
        f"{'Quick smoke run' if quick else 'Full run'}: {streams} producer connections on the SEQPACKET socket "
        f"(one process) → `progress_listen` → one daphne → {clients} SSE clients (one process), {seconds:g} s per "
        "rate. Latency = sent → parsed by the client, over the clients that stay connected; one of the clients "
        "drops its connection halfway and reconnects 0.5 s later with `Last-Event-ID`.",
        "",
        "| transport | rate (events/s) | sent | p50 (ms) | p95 (ms) | max (ms) | lost (steady clients) | lost (reconnecting client) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    names = {"redis": "channels-redis + PostgreSQL", "embedded": "embedded (SQLite, table polling)"}
    for r in rows:
        lines.append(
            f"| {names[r.transport]} | {r.rate} | {r.sent} | {r.p50_ms:.1f} | {r.p95_ms:.1f} | {r.max_ms:.1f} "
            f"| {r.lost} | {r.lost_reconnect} |"
        )
    lines.append("")
    for transport in ("redis", "embedded"):
        mine = [r for r in rows if r.transport == transport]
        if not mine:
            continue
        best = max((r.rate for r in mine if r.sustained), default=None)
        lines.append(
            f"- {names[transport]}: highest rate sustained without loss: "
            f"{f'{best} events/s' if best else 'none of the rates tried'} (of {', '.join(str(r.rate) for r in mine)})."
        )
    redis_1000 = [r for r in rows if r.transport == "redis" and r.rate == 1000]
    embedded = [r for r in rows if r.transport == "embedded"]
    if redis_1000:
        lines.append(
            f"- Target p95 < 100 ms at 1,000 events/s to {clients} clients with Redis: "
            f"{'met' if redis_1000[0].p95_ms < 100 else 'NOT met'} ({redis_1000[0].p95_ms:.0f} ms)."
        )
    embedded_1000 = [r for r in embedded if r.rate == 1000]
    if embedded_1000:
        lines.append(
            f"- Target p95 < 500 ms on the embedded default (1,000 events/s to {clients} clients): "
            f"{'met' if embedded_1000[0].p95_ms < 500 else 'NOT met'} ({embedded_1000[0].p95_ms:.0f} ms)."
        )
    for transport, limit in (("redis", 100), ("embedded", 500)):
        within = [r.rate for r in rows if r.transport == transport and r.sustained and r.p95_ms < limit]
        if within:
            lines.append(f"- {names[transport]}: p95 under {limit} ms up to {max(within)} events/s.")
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
