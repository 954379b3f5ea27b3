"""Pool benchmark: GET /pool/pending and POST /pool/response over HTTP on PostgreSQL.

One run: create the database `bench_pool`, seed 10,000 devices and a pending core (live
broadcasts, direct and list tasks) plus answered history up to 10,000 messages; measure
`GET /pool/pending` for random devices against a floor (`GET /pool/log` for an empty day: an
authenticated endpoint of ours answering `[]`), interleaved; grow the history to 1,000,000
messages (same pending core) and measure again; then `POST /pool/response` throughput with 16
concurrent device clients. Load comes from wrk (Lua scripts pick a random device token per
request) against granian (as production runs it: keep-alive on) with DJANGO_DEBUG=0. The database
is dropped at the end.

    .venv/bin/python -m bench.pool           # full run (figures into docs/benchmarks.md)
    .venv/bin/python -m bench.pool --quick   # tiny smoke run (nothing written)
    .venv/bin/python -m bench.pool --fleet   # rollouts and /pool/events (bench/pool_fleet.py; --streams N)
"""

from __future__ import annotations

import argparse
import os
import random
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres")
DB_NAME = os.environ.get("BENCH_POOL_DB", "bench_pool")
WORKDIR = Path(tempfile.mkdtemp(prefix="bench-pool-"))
(WORKDIR / "static").mkdir()

# The server and this process share settings: same database, key and var dir.
os.environ.update(
    {
        "DATABASE_URL": ADMIN_URL.rsplit("/", 1)[0] + "/" + DB_NAME,
        "COORDINATOR_VAR_DIR": str(WORKDIR),
        "DJANGO_SECRET_KEY": os.environ.get("BENCH_SECRET_KEY", secrets.token_urlsafe(50)),
        "DJANGO_DEBUG": "0",
        # All clients sign in from this one host (docs/security.md): no credential limit here.
        "CREDENTIAL_RATE_PER_ADDRESS": "1000000/min",
        "CREDENTIAL_RATE_PER_ACCOUNT": "1000000/min",
        "DJANGO_SETTINGS_MODULE": "coordinator.settings",
        "LOG_LEVEL": "WARNING",
    }
)
os.environ.pop("POOL_JOURNAL_DIR", None)

from bench.pool_seed import Seeder, now_utc, stderr  # noqa: E402
from bench.report import median, write_section  # noqa: E402

# Every script ends with this: one RESULT line (requests, errors, p50 ms, p95 ms, seconds).
LUA_DONE = """
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %f %f %f\\n", summary.requests,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, summary.duration / 1e6))
end
"""

PENDING_LUA = """
local tokens = {%s}
request = function()
  local t = tokens[math.random(#tokens)]
  return wrk.format("GET", "%s", {["Authorization"] = "Bearer " .. t, ["Accept"] = "application/json"})
end
"""

RESPONSE_LUA = """
local jobs = {%s}
local counter, step = 1, 1
local n = 0
setup = function(thread) n = n + 1; thread:set("tid", n) end
init = function(args) counter = tid; step = %d end
request = function()
  local job = jobs[counter]
  counter = counter + step
  if job == nil then job = jobs[1] end
  return wrk.format("POST", "/pool/response",
    {["Authorization"] = "Bearer " .. job[1], ["Content-Type"] = "application/json"},
    '{"parent_id":"' .. job[2] .. '","status":"done","body":"ok"}')
end
"""


def admin_sql(sql: str) -> None:
    import psycopg

    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql)


def manage(*args: str) -> None:
    subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=os.environ, check=True)


def start_server(workers: int) -> subprocess.Popen[bytes]:
    from coordinator.management.commands.serve import granian_argv
    from tests.live import free_port, wait_for_http

    port = free_port()
    proc = subprocess.Popen(granian_argv(port=port, workers=workers, log_level="warning"), cwd=ROOT, env=os.environ)
    proc.base = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    wait_for_http(f"{proc.base}/healthz", proc=proc)  # type: ignore[attr-defined]
    return proc


def wrk(base: str, script: str, *, seconds: int, connections: int) -> dict[str, float]:
    path = WORKDIR / f"bench-{secrets.token_hex(4)}.lua"
    path.write_text(script + LUA_DONE)
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "30s", "-s", str(path), base],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"RESULT (\d+) (\d+) ([\d.]+) ([\d.]+) ([\d.]+)", out)
    if not match:
        raise SystemExit(f"wrk printed no result:\n{out}")
    requests, errors, p50, p95, duration = match.groups()
    return {
        "requests": int(requests),
        "errors": int(errors),
        "p50_ms": float(p50),
        "p95_ms": float(p95),
        "rps": int(requests) / float(duration),
    }


def lua_tokens(tokens: list[str]) -> str:
    return ",".join(f'"{t}"' for t in tokens)


def measure_pending(
    base: str, device_tokens: list[str], admin_token: str, *, rounds: int, seconds: int, conns: int
) -> dict[str, Any]:
    """Interleaved rounds of floor and pending; medians of each round's p50/p95."""
    floor_script = PENDING_LUA % (lua_tokens([admin_token]), "/pool/log?date=2001-01-01")
    pending_script = PENDING_LUA % (lua_tokens(device_tokens), "/pool/pending")
    wrk(base, pending_script, seconds=2, connections=conns)  # warm-up (connections, caches)
    floors, pendings = [], []
    for _ in range(rounds):
        floors.append(wrk(base, floor_script, seconds=seconds, connections=conns))
        pendings.append(wrk(base, pending_script, seconds=seconds, connections=conns))
    summary = {}
    for name, runs in (("floor", floors), ("pending", pendings)):
        summary[name] = {key: median([r[key] for r in runs]) for key in ("p50_ms", "p95_ms", "rps")}
        summary[name]["errors"] = sum(r["errors"] for r in runs)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny run: a smoke test, nothing written")
    parser.add_argument("--fleet", action="store_true", help="the fleet benchmark instead (bench/pool_fleet.py)")
    parser.add_argument("--streams", type=int, help="with --fleet: idle /pool/events streams to hold (5,000)")
    args = parser.parse_args()
    if args.fleet:
        from bench.pool_fleet import main as fleet_main

        fleet_main(quick=args.quick, **({"streams": args.streams} if args.streams else {}))
        return
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian package `wrk`).")
    quick = args.quick
    devices = 200 if quick else 10_000
    small, large = (1_000, 10_000) if quick else (10_000, 1_000_000)
    seconds, rounds, conns = (2, 1, 16) if quick else (8, 3, 16)
    rng = random.Random(20261123)

    admin_sql(f'DROP DATABASE IF EXISTS "{DB_NAME}"')
    admin_sql(f'CREATE DATABASE "{DB_NAME}"')
    server = None
    try:
        stderr(f"migrating {DB_NAME}…")
        manage("migrate", "-v0")
        import django

        django.setup()
        from django.contrib.auth.hashers import make_password
        from django.db import connection, transaction
        from django.utils import timezone
        from rest_framework_simplejwt.tokens import RefreshToken

        from coordinator.models import Role, User
        from pool.models import Delivery, Device
        from pool.tokens import device_token_encode

        admin = User.objects.create_user("bench-admin@example.com", secrets.token_urlsafe(16), role=Role.ADMIN)
        master = User.objects.create_user("bench-master@example.com", secrets.token_urlsafe(16), role=Role.MASTER)
        secret_hash = make_password("bench-secret")
        now = now_utc()
        Device.objects.bulk_create(
            [
                Device(
                    name=f"bench-{i}",
                    kind="bench",
                    validated=True,
                    secret_hash=secret_hash,
                    broadcasts_seen_until=timezone.now() - timedelta_minutes(1),
                )
                for i in range(1, devices + 1)
            ],
            batch_size=5000,
        )
        raw = (
            connection.connection
            if connection.connection
            else (connection.ensure_connection() or connection.connection)
        )
        seeder = Seeder(raw, devices=devices, sender_id=master.pk, sender_email=master.email, rng=rng)
        started = time.monotonic()
        with transaction.atomic():
            seeder.pending_core(now, broadcasts=3, direct=max(20, devices // 5), lists=max(5, devices // 30))
            seeder.history(now, small, progress=stderr)
            seeder.finish()
        seed_small = time.monotonic() - started
        stderr(f"seeded {seeder.messages:,} messages in {seed_small:.1f}s")

        admin_token = str(RefreshToken.for_user(admin).access_token)
        sample = rng.sample(range(1, devices + 1), min(devices, 2000))
        tokens = [device_token_encode(device_id=pk)[0] for pk in sample]
        pending_sizes = sorted(
            Delivery.objects.filter(device_id__in=sample, state="pending")
            .values("device_id")
            .annotate(n=django_count())
            .values_list("n", flat=True)
        )
        connection.close()

        server = start_server(workers=4)
        stderr("measuring the small database…")
        small_result = measure_pending(server.base, tokens, admin_token, rounds=rounds, seconds=seconds, conns=conns)

        stderr(f"growing the history to {large:,} messages…")
        started = time.monotonic()
        raw = (
            connection.connection
            if connection.connection
            else (connection.ensure_connection() or connection.connection)
        )
        seeder.conn = raw
        with transaction.atomic():
            seeder.history(now, large, progress=stderr)
            seeder.finish()
        seed_large = time.monotonic() - started
        stderr(f"seeded up to {seeder.messages:,} messages in {seed_large:.1f}s more")
        connection.close()
        stderr("measuring the large database…")
        large_result = measure_pending(server.base, tokens, admin_token, rounds=rounds, seconds=seconds, conns=conns)

        stderr("measuring POST /pool/response…")
        jobs = list(
            Delivery.objects.filter(state="pending", task__target_all=False)
            .order_by("?")
            .values_list("device_id", "task__msg_id")[:40000]
        )
        jobs += list(
            Delivery.objects.filter(state="pending", task__target_all=True)
            .order_by("?")
            .values_list("device_id", "task__msg_id")[:30000]
        )
        token_of: dict[int, str] = {}
        job_rows = []
        for device_id, msg_id in jobs:
            if device_id not in token_of:
                token_of[device_id] = device_token_encode(device_id=device_id)[0]
            job_rows.append(f'{{"{token_of[device_id]}","{msg_id}"}}')
        connection.close()
        response_result = wrk(server.base, RESPONSE_LUA % (",".join(job_rows), 2), seconds=seconds * 2, connections=16)
        total_messages = seeder.messages
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        try:
            from django.db import connections

            connections.close_all()
        except Exception:
            pass
        admin_sql(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        shutil.rmtree(WORKDIR, ignore_errors=True)

    ratio_floor = large_result["pending"]["p95_ms"] / large_result["floor"]["p95_ms"]
    ratio_scale = large_result["pending"]["p95_ms"] / small_result["pending"]["p95_ms"]
    floor_scale = large_result["floor"]["p95_ms"] / small_result["floor"]["p95_ms"]

    def row(label: str, r: dict[str, Any]) -> str:
        return f"| {label} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['rps']:.0f} | {r['errors']} |"

    pend_median = pending_sizes[len(pending_sizes) // 2] if pending_sizes else 0
    markdown = "\n".join(
        [
            "### Device task pool (`pool`)",
            "",
            f"`python -m bench.pool{' --quick' if quick else ''}`: PostgreSQL, granian (4 workers x 1 thread, "
            f"keep-alive, DJANGO_DEBUG=0), wrk on loopback with {conns} connections, {devices:,} devices, "
            f"{rounds} interleaved rounds of {seconds}s (medians). Random devices from a sample of {len(tokens):,}; "
            f"pending tasks per sampled device: median {pend_median}, max {max(pending_sizes or [0])}.",
            "",
            f"Seeding (COPY): {small:,} messages in {seed_small:.1f}s; grown to {total_messages:,} in "
            f"{seed_large:.1f}s more.",
            "",
            "| endpoint | p50 ms | p95 ms | req/s | errors |",
            "|---|---|---|---|---|",
            row(f"floor `GET /pool/log` (empty day, `[]`), {small:,} msgs", small_result["floor"]),
            row(f"`GET /pool/pending`, {small:,} msgs", small_result["pending"]),
            row(f"floor `GET /pool/log` (empty day, `[]`), {total_messages:,} msgs", large_result["floor"]),
            row(f"`GET /pool/pending`, {total_messages:,} msgs", large_result["pending"]),
            "",
            f"- pending p95 / floor p95 on the large database: **{ratio_floor:.2f}x** (target <= 3x)",
            f"- pending p95 large / small: **{ratio_scale:.2f}** (target 0.8-1.2; floor large/small for "
            f"reference: {floor_scale:.2f})",
            f"- load average at the end of the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (a shared "
            "machine: absolute times include other work; ratios come from interleaved rounds)",
            f"- `POST /pool/response` with 16 concurrent device clients: **{response_result['rps']:.0f} responses/s**, "
            f"p50 {response_result['p50_ms']:.1f} ms, p95 {response_result['p95_ms']:.1f} ms, "
            f"{response_result['errors']} non-2xx of {response_result['requests']:,}",
        ]
    )
    print(markdown)
    if not quick:
        write_section("pool", markdown)


def timedelta_minutes(minutes: int) -> Any:
    from datetime import timedelta

    return timedelta(minutes=minutes)


def django_count() -> Any:
    from django.db.models import Count

    return Count("id")


if __name__ == "__main__":
    main()
