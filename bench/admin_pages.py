"""Admin page timings at volume: the server time of every list page (and the pages staff open
most) with 1,000,000 messages, 5,000 jobs and a 10,000,000-task farm run, against the same pages
at a small volume measured in the same run.

In-process on PostgreSQL with DEBUG off: Django's test client signed in as an admin, so the time
is the server's own, from request to answer (no network, no browser). Each page: 2 warm-up
requests, then the median of 7; with its query count. The 10,000,000-task run has 1,000,000 of its
rows materialised (handed out: done, failed, computing, waiting); the rest exist only as the
run's count, as they do in production until handed out. The database is dropped at the end.

    .venv/bin/python -m bench.admin_pages           # full run (figures into docs/benchmarks.md)
    .venv/bin/python -m bench.admin_pages --quick   # tiny smoke run (nothing written)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres")
DB_NAME = os.environ.get("BENCH_ADMIN_DB", "bench_admin")
WORKDIR = Path(tempfile.mkdtemp(prefix="bench-admin-"))
(WORKDIR / "static").mkdir()
TARGET_MS = 300.0

os.environ.update(
    {
        "DATABASE_URL": ADMIN_URL.rsplit("/", 1)[0] + "/" + DB_NAME,
        "COORDINATOR_VAR_DIR": str(WORKDIR),
        "DJANGO_SECRET_KEY": os.environ.get("BENCH_SECRET_KEY", secrets.token_urlsafe(50)),
        "DJANGO_DEBUG": "0",
        "DJANGO_SETTINGS_MODULE": "coordinator.settings",
        "LOG_LEVEL": "WARNING",
    }
)
os.environ.pop("REDIS_URL", None)
os.environ.pop("POOL_JOURNAL_DIR", None)

from bench.pool_seed import Seeder, now_utc, stderr  # noqa: E402
from bench.report import median, write_section  # noqa: E402


def admin_sql(sql: str) -> None:
    import psycopg

    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql)


def manage(*args: str) -> None:
    subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=os.environ, check=True)


def pages(ids: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        ("admin index (operations dashboard)", "/admin/"),
        ("pool: devices", "/admin/pool/device/"),
        ("pool: device tasks", "/admin/pool/task/"),
        ("pool: device task page", f"/admin/pool/task/{ids['task']}/change/"),
        ("pool: messages", "/admin/pool/message/"),
        ("pool: messages, search by id", f"/admin/pool/message/?q={ids['message']}"),
        ("pool: compose a task", "/admin/pool/task/add/"),
        ("farm: runs", "/admin/farm/run/"),
        ("farm: run page", f"/admin/farm/run/{ids['run']}/change/"),
        ("farm: tasks", "/admin/farm/task/"),
        (
            "farm: tasks of the big run, computing",
            f"/admin/farm/task/?run__id__exact={ids['run']}&status__exact=computing",
        ),
        ("farm: tasks past their lease", "/admin/farm/task/?stuck=past_lease"),
        ("farm: workers", "/admin/farm/worker/"),
        ("jobs: jobs", "/admin/jobs/job/"),
        ("jobs: failed jobs", "/admin/jobs/job/?status__exact=failure"),
        ("jobs: job page", f"/admin/jobs/job/{ids['job']}/change/"),
        ("jobs: files", "/admin/jobs/jobfile/"),
        ("progress: topics", "/admin/progress/progresstopic/"),
        ("progress: Live page", "/admin/progress/progresstopic/live/"),
    ]


def measure(client: Any, url: str, rounds: int) -> tuple[float, int]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for _ in range(2):
        answer = client.get(url)
        assert answer.status_code == 200, (url, answer.status_code)
    times = []
    queries = 0
    for _ in range(rounds):
        with CaptureQueriesContext(connection) as captured:
            began = time.perf_counter()
            client.get(url)
            times.append((time.perf_counter() - began) * 1000)
        queries = len(captured.captured_queries)
    return median(times), queries


def seed_minutes(rng: random.Random) -> None:
    """48 hours (the retention) of minute values for every series the dashboard records."""
    from django.utils import timezone

    from coordinator.models import MetricMinute
    from coordinator.services import operations_record

    operations_record()
    names = list(MetricMinute.objects.values_list("series", flat=True).distinct())
    end = timezone.now().replace(second=0, microsecond=0) - timedelta(minutes=1)
    MetricMinute.objects.bulk_create(
        [
            MetricMinute(series=name, minute=int((end - timedelta(minutes=m)).timestamp()), value=rng.random() * 100)
            for name in names
            for m in range(1, 48 * 60)
        ],
        batch_size=10_000,
        ignore_conflicts=True,
    )


def time_operations_record(rounds: int) -> float:
    """Median milliseconds of one run of the dashboard's minute recorder."""
    from coordinator.services import operations_record

    times = []
    for _ in range(rounds):
        began = time.perf_counter()
        operations_record()
        times.append((time.perf_counter() - began) * 1000)
    return median(times)


def time_operations_overview(rounds: int) -> float:
    """Median milliseconds of one live overview of the dashboard (its counts and needs-attention
    lists, computed and published: what each OPERATIONS_LIVE_SECONDS costs while it is open)."""
    from coordinator.services import operations_overview_publish

    times = []
    for _ in range(rounds):
        began = time.perf_counter()
        operations_overview_publish()
        times.append((time.perf_counter() - began) * 1000)
    return median(times)


def seed_jobs(admin: Any, count: int, rng: random.Random) -> None:
    from django.utils import timezone

    from jobs.models import Job, JobAttempt, JobFile

    now = timezone.now()
    statuses = ["success"] * 80 + ["failure"] * 12 + ["started"] * 3 + ["fresh"] * 5
    jobs = []
    for _ in range(count):
        status = rng.choice(statuses)
        started = now - timedelta(minutes=rng.randint(1, 60 * 24 * 30))
        jobs.append(
            Job(
                type=rng.choice(["csv_export", "json_export", "noop", "jsonl_import"]),
                data={},
                status=status,
                created_by=admin,
                worker=f"worker-{rng.randint(1, 8)}-{rng.randint(1000, 9999)}:{secrets.token_hex(16)}",
                attempts=1,
                error="RuntimeError: the export's disk is full" if status == "failure" else "",
                progress=100 if status == "success" else rng.random() * 100,
                started_at=None if status == "fresh" else started,
                finished_at=started + timedelta(seconds=rng.randint(1, 900))
                if status in ("success", "failure")
                else None,
                heartbeat_at=started if status == "started" else None,
            )
        )
    created = Job.objects.bulk_create(jobs, batch_size=1000)
    JobAttempt.objects.bulk_create(
        [
            JobAttempt(job=job, worker=job.worker or "", started_at=job.started_at, finished_at=now, outcome="failure")
            for job in created
            if job.status == "failure"
        ],
        batch_size=1000,
    )
    JobFile.objects.bulk_create(
        [
            JobFile(filename=f"export-{job.pk}.csv", owner=admin, format="csv", size=rng.randint(1, 10**8), job=job)
            for job in created[: max(1, count // 10)]
        ],
        batch_size=1000,
    )


def seed_farm_rows(run_id: int, worker_ids: list[int], rows: int, rng: random.Random) -> None:
    """Materialised rows of a run, written with COPY."""
    from django.db import connection

    now = now_utc()
    started = time.monotonic()
    with (
        connection.cursor() as cursor,
        cursor.cursor.copy(
            "COPY farm_task (run_id, task, status, percent_completed, worker_id, attempts, failure, started, updated) "
            "FROM STDIN"
        ) as copy,
    ):
        for number in range(rows):
            pick = rng.random()
            status = "done" if pick < 0.9 else "failed" if pick < 0.92 else "computing" if pick < 0.93 else "waiting"
            at = now - timedelta(seconds=rng.randint(1, 86400))
            copy.write_row(
                (
                    run_id,
                    number,
                    status,
                    100.0 if status == "done" else rng.random() * 100,
                    rng.choice(worker_ids) if status != "waiting" else None,
                    1,
                    "crashed" if status == "failed" else "",
                    at,
                    at + timedelta(seconds=rng.randint(1, 600)),
                )
            )
            if number and number % 200_000 == 0:
                stderr(f"  farm rows {number:,}/{rows:,} ({time.monotonic() - started:.0f} s)")
    with connection.cursor() as cursor:
        cursor.execute("UPDATE farm_run SET next_task = %s WHERE id = %s", [rows, run_id])
        cursor.execute("ANALYZE farm_task")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny run: a smoke test, nothing written")
    args = parser.parse_args()
    quick = args.quick
    rng = random.Random(20261206)
    small = {"messages": 10_000, "jobs": 500, "run_tasks": 10_000, "run_rows": 1_000}
    large = (
        {"messages": 30_000, "jobs": 1_000, "run_tasks": 100_000, "run_rows": 10_000}
        if quick
        else {"messages": 1_000_000, "jobs": 5_000, "run_tasks": 10_000_000, "run_rows": 1_000_000}
    )
    rounds = 3 if quick else 7

    admin_sql(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
    admin_sql(f'CREATE DATABASE "{DB_NAME}"')
    try:
        stderr(f"migrating {DB_NAME}…")
        manage("migrate", "-v0")
        import django

        django.setup()
        from django.db import connection
        from django.test import Client

        from coordinator.models import Role, User
        from farm import services as farm
        from farm.models import Run
        from jobs.models import Job
        from pool.models import Device, Message
        from pool.services import device_create
        from progress.services import progress_publish

        admin = User.objects.create_user("bench-admin@example.com", secrets.token_urlsafe(16), role=Role.ADMIN)
        for i in range(23):
            device_create(name=f"device-{i:02d}", kind=rng.choice(["pc", "sensor", "router"]), validated=True)
        seeder = Seeder(connection.connection, devices=23, sender_id=admin.pk, sender_email=admin.email, rng=rng)
        first_device = Device.objects.order_by("pk").values_list("pk", flat=True).first() or 1
        seeder.device = lambda: rng.randint(first_device, first_device + 22)  # type: ignore[method-assign]
        workers = [
            farm.worker_register(owner=admin, uuid=secrets.token_hex(20), hostname=f"node-{i:03d}", pid=1000 + i).pk
            for i in range(50)
        ]
        for i in range(200):
            progress_publish(topic=f"stream:{i}", kind="new", text=f"stream {i}", state={"percent": i % 100})
        seed_minutes(rng)
        recorder: dict[str, float] = {}
        overview: dict[str, float] = {}
        results: dict[str, dict[str, tuple[float, int]]] = {}
        for label, volume in (("small", small), ("large", large)):
            stderr(f"seeding to {volume['messages']:,} messages…")
            seeder.history(now_utc(), volume["messages"])
            seeder.finish()
            seed_jobs(admin, volume["jobs"] - Job.objects.count(), rng)
            run = farm.run_create(owner=admin, num_tasks=volume["run_tasks"], name=f"the {label} run")
            stderr(f"materialising {volume['run_rows']:,} rows of a {volume['run_tasks']:,}-task run…")
            seed_farm_rows(run.pk, workers, volume["run_rows"], rng)
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE")
            ids = {
                "task": Message.objects.filter(type="task").order_by("-seq").values_list("pk", flat=True).first(),
                "message": Message.objects.order_by("seq").values_list("msg_id", flat=True).first(),
                "run": Run.objects.get(pk=run.pk).pk,
                "job": Job.objects.filter(status="failure").values_list("pk", flat=True).first(),
            }
            recorder[label] = time_operations_record(rounds)
            stderr(f"  the dashboard's minute recorder: {recorder[label]:.0f} ms")
            overview[label] = time_operations_overview(rounds)
            stderr(f"  the dashboard's live overview: {overview[label]:.0f} ms")
            client = Client()
            client.force_login(admin)
            stderr(f"measuring {label}…")
            results[label] = {}
            for name, url in pages(ids):
                results[label][name] = measure(client, url, rounds)
                ms, queries = results[label][name]
                stderr(f"  {name}: {ms:.0f} ms, {queries} queries")
        from coordinator.models import MetricMinute

        counts = {
            "messages": Message.objects.count(),
            "jobs": Job.objects.count(),
            "minutes": MetricMinute.objects.count(),
        }
        rows = [
            "| page | small: ms | at volume: ms | ratio | queries | under 300 ms |",
            "|---|---|---|---|---|---|",
        ]
        over = []
        for name in results["large"]:
            small_ms, _ = results["small"][name]
            large_ms, queries = results["large"][name]
            ok = large_ms <= TARGET_MS
            if not ok:
                over.append(name)
            rows.append(
                f"| {name} | {small_ms:.0f} | {large_ms:.0f} | {large_ms / small_ms:.2f} | {queries} | "
                f"{'yes' if ok else '**no**'} |"
            )
        markdown = "\n".join(
            [
                "## Admin pages",
                "",
                "`python -m bench.admin_pages`: server time of each admin page (Django's test client in-process, "
                "PostgreSQL, DEBUG off, signed in as an admin; median of "
                f"{rounds} after 2 warm-ups). *small*: 10,000 messages, 500 jobs, a 10,000-task run; "
                f"*at volume*: {counts['messages']:,} messages, {counts['jobs']:,} jobs, a "
                f"{large['run_tasks']:,}-task run with {large['run_rows']:,} rows materialised (plus the small "
                "run), 23 devices, 50 workers, 200 progress streams. Both measured in the same run.",
                "",
                *rows,
                "",
                "Every page under 300 ms at volume." if not over else f"Over 300 ms at volume: {', '.join(over)}.",
            ]
        )
        print(markdown)
        minute = (
            f"One run of the minute recorder (`coordinator.services.operations_record`: every app's values "
            f"of a minute, the insert, the retention's delete; median of {rounds}): "
            f"**{recorder['small']:.0f} ms** small, **{recorder['large']:.0f} ms** at volume, with "
            f"{counts['minutes']:,} minute rows stored (48 h of every series). One live overview "
            f"(`operations_overview_publish`: every card and needs-attention count, published; what each "
            f"`OPERATIONS_LIVE_SECONDS` costs while a dashboard is open): **{overview['small']:.0f} ms** small, "
            f"**{overview['large']:.0f} ms** at volume."
        )
        print(minute)
        if not quick:
            write_section("admin_pages", markdown)
            write_section("operations_minute", minute)
        print(json.dumps({"over_target": over}))
    finally:
        from django.db import connections

        connections.close_all()
        admin_sql(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')


if __name__ == "__main__":
    main()
