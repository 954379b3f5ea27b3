"""What the metrics cost on the hot paths: `python -m bench.metrics_cost [--quick] [--rounds N] [--seconds S]`.

Two granian servers (2 worker processes each, keep-alive, DEBUG off) on one PostgreSQL database,
started side by side and driven one at a time in interleaved rounds (each round starts with the
other one):
  * "with metrics": as production runs it, the HTTP middleware and the services' counters writing
    prometheus-client's multiprocess files (PROMETHEUS_MULTIPROC_DIR, as `serve` sets it);
  * "without": bench/settings_without_metrics.py (the middleware removed, every metric call a no-op).
Measured: farm tasks/s with the real `taskfarm-worker` client (8 processes, 4 requests per task,
bench.farm) and `GET /pool/pending` p50/p95 with wrk (16 connections, random devices of a seeded
pool of 2,000 devices with 10,000 messages, bench.pool). Medians of the rounds; the ratio is
with / without. At the end the "with" server's /metrics is read back: its farm and HTTP counts
must match what the rounds did. Figures go to docs/benchmarks.md (section metrics_cost).
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import shutil
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

os.environ.setdefault("BENCH_POOL_DB", "bench_metrics_cost")

from bench import farm as farm_bench
from bench import pool as pool_bench
from bench.pool_seed import Seeder, now_utc, stderr
from bench.report import median, write_section
from coordinator.management.commands.serve import granian_argv

TOKEN = secrets.token_urlsafe(24)
WORKERS = 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny run: a smoke test, nothing written")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    parser.add_argument("--seconds", type=int, default=5, help="wrk seconds per round for the pool (5)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian package `wrk`).")
    quick = args.quick
    devices, history = (200, 1_000) if quick else (2_000, 10_000)
    tasks, seconds, rounds = (100, 2, 1) if quick else (300, args.seconds, args.rounds)
    rng = random.Random(20261207)
    load_at_start = os.getloadavg()[0]
    workdir = Path(tempfile.mkdtemp(prefix="bench-metrics-"))
    db = pool_bench.DB_NAME
    pool_bench.admin_sql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    pool_bench.admin_sql(f'CREATE DATABASE "{db}"')
    try:
        stderr(f"migrating {db} and seeding {devices:,} devices…")
        pool_bench.manage("migrate", "-v0")
        pool_bench.manage("createuser", farm_bench.USER, "--password", farm_bench.PASSWORD)
        import django

        django.setup()
        from django.contrib.auth.hashers import make_password
        from django.db import connection, transaction
        from django.utils import timezone

        from coordinator.models import Role, User
        from pool.models import Device
        from pool.tokens import device_token_encode

        master = User.objects.create_user("bench-master@example.com", secrets.token_urlsafe(16), role=Role.MASTER)
        secret_hash = make_password("bench-secret")
        Device.objects.bulk_create(
            [
                Device(
                    name=f"bench-{i}",
                    validated=True,
                    secret_hash=secret_hash,
                    broadcasts_seen_until=timezone.now() - pool_bench.timedelta_minutes(1),
                )
                for i in range(1, devices + 1)
            ],
            batch_size=5000,
        )
        connection.ensure_connection()
        seeder = Seeder(connection.connection, devices=devices, sender_id=master.pk, sender_email=master.email, rng=rng)
        now = now_utc()
        with transaction.atomic():
            seeder.pending_core(now, broadcasts=3, direct=max(20, devices // 5), lists=max(5, devices // 30))
            seeder.history(now, history, progress=stderr)
            seeder.finish()
        tokens = [device_token_encode(device_id=pk)[0] for pk in rng.sample(range(1, devices + 1), min(devices, 1000))]
        connection.close()
        pending = pool_bench.PENDING_LUA % (pool_bench.lua_tokens(tokens), "/pool/pending")

        multiproc = workdir / "metrics"
        multiproc.mkdir()
        base_env = {**os.environ, "PYTHONPATH": str(pool_bench.ROOT)}
        variants = {
            "with metrics": {**base_env, "PROMETHEUS_MULTIPROC_DIR": str(multiproc), "METRICS_TOKEN": TOKEN},
            "without": {**base_env, "DJANGO_SETTINGS_MODULE": "bench.settings_without_metrics"},
        }
        rates: dict[str, list[float]] = {name: [] for name in variants}
        p50s: dict[str, list[float]] = {name: [] for name in variants}
        p95s: dict[str, list[float]] = {name: [] for name in variants}
        claimed = 0
        with ExitStack() as stack:
            bases = {
                name: stack.enter_context(
                    farm_bench.serve_http(
                        lambda port: granian_argv(port=port, workers=WORKERS, log_level="warning"),
                        env,
                        pool_bench.ROOT,
                        workdir / f"{name.replace(' ', '-')}.log",
                        "/healthz",
                    )
                )
                for name, env in variants.items()
            }
            for name, base in bases.items():  # warm-up: connections, caches, imports
                pool_bench.wrk(base, pending, seconds=1, connections=16)
                farm_bench.farm_scenario(f"warm-up {name}", base + "/api/", farm_bench.USER, 50, 120, workdir)
            before = farm_count(bases["with metrics"])
            for number in range(rounds):
                order = list(variants) if number % 2 == 0 else list(reversed(variants))
                for name in order:
                    stderr(f"round {number + 1}/{rounds}: {name}")
                    result = farm_bench.farm_scenario(name, bases[name] + "/api/", farm_bench.USER, tasks, 300, workdir)
                    rates[name].append(result.rate)
                    if name == "with metrics":
                        claimed += result.claimed
                    measured = pool_bench.wrk(bases[name], pending, seconds=seconds, connections=16)
                    p50s[name].append(measured["p50_ms"])
                    p95s[name].append(measured["p95_ms"])
                    stderr(f"  {result.rate:.1f} tasks/s, pending p95 {measured['p95_ms']:.2f} ms")
            counted = farm_count(bases["with metrics"]) - before
        stderr(f"/metrics counted {counted:.0f} farm tasks claimed; the clients claimed {claimed}")
        load = (load_at_start, os.getloadavg()[0])
        table = report(rates, p50s, p95s, tasks, seconds, rounds, devices, history, counted, claimed, load)
        print(table)
        if not quick:
            write_section("metrics_cost", table)
    finally:
        pool_bench.admin_sql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        shutil.rmtree(workdir, ignore_errors=True)


def farm_count(base: str) -> float:
    """The farm tasks /metrics says were handed out (all processes of the server)."""
    import requests
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(f"{base}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "coordinator_farm_tasks_claimed_total":
                return float(sample.value)
    return 0.0


def report(
    rates: dict[str, list[float]],
    p50s: dict[str, list[float]],
    p95s: dict[str, list[float]],
    tasks: int,
    seconds: int,
    rounds: int,
    devices: int,
    history: int,
    counted: float,
    claimed: int,
    load: tuple[float, float],
) -> str:
    with_, without = "with metrics", "without"
    rate_ratio = median(rates[with_]) / median(rates[without])
    p95_ratio = median(p95s[with_]) / median(p95s[without])
    lines = [
        f"{rounds} interleaved rounds on PostgreSQL, granian with {WORKERS} workers per server; farm: {tasks:,} tasks "
        f"per round with 8 `taskfarm-worker` processes; pool: wrk for {seconds} s at 16 connections against "
        f"{devices:,} devices ({history:,} messages). Medians of the rounds.",
        "",
        "| | farm tasks/s | pool pending p50 ms | pool pending p95 ms |",
        "|---|---|---|---|",
    ]
    for name in (without, with_):
        lines.append(f"| {name} | {median(rates[name]):.1f} | {median(p50s[name]):.2f} | {median(p95s[name]):.2f} |")
    lines += [
        f"| with / without | {rate_ratio:.3f} | {median(p50s[with_]) / median(p50s[without]):.3f} | {p95_ratio:.3f} |",
        "",
        f"With metrics the farm ran at {rate_ratio:.3f} times the rate without, and pending's p95 took "
        f"{p95_ratio:.3f} times as long (target: at most 5% slower, i.e. at least 0.95 and at most 1.05). "
        f"The server with metrics counted {counted:.0f} farm tasks handed out in its rounds; its clients "
        f"claimed {claimed}. Load average of the machine at the start and the end: {load[0]:.1f}, {load[1]:.1f} "
        "(2 cores; other work running beside the bench widens the spread between rounds).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    started = time.monotonic()
    main()
    stderr(f"done in {time.monotonic() - started:.0f} s")
