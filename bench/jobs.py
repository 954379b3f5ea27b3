"""Benchmark of the jobs app on PostgreSQL (issue 5).

    .venv/bin/python -m bench.jobs [--quick] [--drain-only]

Creates its own database (`bench_jobs_<pid>`, next to `BENCH_DATABASE_URL` / `DATABASE_URL`,
default `postgres://postgres@127.0.0.1:5432/coordinator`) and drops it at the end. In one run:

1. enqueue-to-`started` latency (p50/p95/p99) of `noop` jobs arriving at 10/s, with the
   LISTEN/NOTIFY broker and with django-q2's stock polling ORM broker (`bench/stock_broker_settings.py`);
2. enqueue rate and no-op drain rate with one and with two clusters, both brokers;
3. exactly-once: N jobs (10,000; 500 with --quick) across two clusters, each appending its id to
   a file: duplicates = lines - distinct ids, lost = N - distinct ids;
4. a CSV export of 1,000,000 job rows (50,000 with --quick): seconds and peak RSS growth.

`--drain-only` runs only part 2 (both brokers, one and two clusters), prints the figures and writes
nothing: the quick check while working on the per-job cost.

`--schedules` runs only the schedules part of `--product` and prints its figures (when the
10,000 occurrences were fired, queued and started, and how many twice), writing nothing.

`--product` (issue 19) runs instead, in one run: part 1 and 2 (shorter: 100 jobs at 10/s, 1000
drained) for both brokers; delayed jobs (start minus `run_after`); 10,000
schedules due in the same minute on two clusters; queue isolation (`default` latency while a long
job holds the `exports` cluster, against no export). Its figures go to the `jobs-product` section.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
PY = str(Path(sys.executable))


def _db_urls() -> tuple[str, str, str]:
    base = (
        os.environ.get("BENCH_DATABASE_URL")
        or os.environ.get("DATABASE_URL")
        or "postgres://postgres@127.0.0.1:5432/coordinator"
    )
    parts = urlsplit(base)
    if not parts.scheme.startswith("postgres"):
        raise SystemExit("bench.jobs needs PostgreSQL (BENCH_DATABASE_URL or DATABASE_URL=postgres://...)")
    name = f"bench_jobs_{os.getpid()}"
    return base, urlunsplit(parts._replace(path=f"/{name}")), name


def _admin_conn(base: str) -> Any:
    import psycopg

    # CREATE/DROP DATABASE run from the maintenance database, which always exists.
    parts = urlsplit(base.replace("postgres://", "postgresql://", 1))
    return psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True)


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRss(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = rss_bytes()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.02):
            self.peak = max(self.peak, rss_bytes())


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env


@contextmanager
def cluster(env: dict[str, str], *args: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [PY, "manage.py", "qcluster", *args],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_done(ids: list[int], timeout: float) -> None:
    from django.db import connection

    from jobs.models import Job

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        connection.close()
        if not Job.objects.filter(pk__in=ids).exclude(status__in=["success", "failure"]).exists():
            return
        time.sleep(0.2)
    raise RuntimeError(f"jobs not finished within {timeout}s")


def warm_up(user: Any, count: int = 4) -> None:
    from jobs.services import job_create

    wait_done([job_create(type="noop", data={}, user=user).pk for _ in range(count)], 120)


def latency(user: Any, n: int, gap: float = 0.1) -> list[float]:
    from jobs.models import Job
    from jobs.services import job_create

    ids = []
    for _ in range(n):
        ids.append(job_create(type="noop", data={}, user=user).pk)
        time.sleep(gap)
    wait_done(ids, 300)
    return [(job.started_at - job.created_at).total_seconds() * 1000 for job in Job.objects.filter(pk__in=ids)]


def enqueue(user: Any, n: int) -> tuple[list[int], float]:
    """Submit n no-op jobs back to back (no cluster running); returns their ids and jobs/s."""
    from jobs.services import job_create

    start = time.perf_counter()
    ids = [job_create(type="noop", data={}, user=user).pk for _ in range(n)]
    return ids, n / (time.perf_counter() - start)


def drain(ids: list[int]) -> float:
    """Jobs/s from the first claim to the last finish (cluster start-up excluded)."""
    from django.db.models import Max, Min

    from jobs.models import Job

    wait_done(ids, 600)
    span = Job.objects.filter(pk__in=ids).aggregate(first=Min("started_at"), last=Max("finished_at"))
    return len(ids) / (span["last"] - span["first"]).total_seconds()


def raw_enqueue(n: int) -> dict[str, float]:
    """`async_task` calls/s outside a transaction with CONN_MAX_AGE=0, per broker: the stock ORM
    broker closes and reopens the connection on every call, ours keeps it."""
    from django.db import connection
    from django_q.brokers.orm import ORM
    from django_q.models import OrmQ
    from django_q.tasks import async_task

    from jobs.broker import ListenNotifyBroker

    rates = {}
    saved = connection.settings_dict["CONN_MAX_AGE"]
    connection.settings_dict["CONN_MAX_AGE"] = 0
    try:
        for label, broker_class in (("stock", ORM), ("notify", ListenNotifyBroker)):
            connection.close()
            broker = broker_class(list_key="bench-raw")
            start = time.perf_counter()
            for _ in range(n):
                async_task("math.floor", 1.5, broker=broker)
            rates[label] = n / (time.perf_counter() - start)
    finally:
        connection.settings_dict["CONN_MAX_AGE"] = saved
        connection.close()
    OrmQ.objects.filter(key="bench-raw").delete()
    return rates


def exactly_once(user: Any, n: int, env: dict[str, str], workdir: Path) -> dict[str, Any]:
    from jobs.services import job_create

    path = workdir / "executions.txt"
    with cluster(env), cluster(env):
        warm_up(user)
        start = time.perf_counter()
        ids = [job_create(type="bench.mark", data={"path": str(path)}, user=user).pk for _ in range(n)]
        wait_done(ids, 1200)
        seconds = time.perf_counter() - start
    lines = path.read_text().split()
    distinct = set(lines) & {str(i) for i in ids}
    return {
        "jobs": n,
        "executions": len([x for x in lines if x in distinct]),
        "distinct": len(distinct),
        "duplicates": len(lines) - len(set(lines)),
        "lost": n - len(distinct),
        "seconds": seconds,
    }


def big_export(user: Any, rows: int) -> dict[str, float]:
    from django.db import connection

    from jobs.services import job_create, job_execute

    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO jobs_job (uuid, type, data, status, created_at, created_by_id, attempts, max_attempts, "
            "result, error, traceback, progress, progress_message, cancel_requested) "
            "SELECT gen_random_uuid(), 'bench.row', jsonb_build_object('n', g, 'label', 'row ' || g), 'success', "
            "now(), %s, 1, 1, to_jsonb(g), '', '', 100, '', false FROM generate_series(1, %s) g",
            [user.pk, rows],
        )
    job = job_create(type="csv_export", data={"datasets": ["jobs"]}, user=user)
    sampler = PeakRss()
    before = rss_bytes()
    sampler.start()
    start = time.perf_counter()
    job_execute(job_id=job.pk)
    seconds = time.perf_counter() - start
    sampler.done.set()
    sampler.join()
    job.refresh_from_db()
    if job.status != "success":
        raise RuntimeError(f"export failed: {job.error}")
    return {
        "rows": job.result["rows"]["jobs"],
        "seconds": seconds,
        "peak_growth_mb": (sampler.peak - before) / 2**20,
        "size_mb": job.result["size"] / 2**20,
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--drain-only", action="store_true", help="only enqueue/drain, nothing written")
    parser.add_argument("--product", action="store_true", help="issue 19: delays, schedules, queues")
    parser.add_argument(
        "--schedules", action="store_true", help="only the 10,000 schedules due in one minute, nothing written"
    )
    args = parser.parse_args(argv)
    quick, drain_only, product = args.quick, args.drain_only, args.product
    n_latency, n_throughput = (50, 200) if quick else ((100, 1000) if product else (500, 2000))
    n_once, n_rows = (500, 50_000) if quick else (10_000, 1_000_000)
    base, url, name = _db_urls()
    workdir = Path(tempfile.mkdtemp(prefix="bench-jobs-"))
    common = {
        "DATABASE_URL": url,
        "COORDINATOR_VAR_DIR": str(workdir),
        "EXPORT_ROOT": str(workdir / "exports"),
        "JOBS_EXTRA_MODULES": "bench.jobs_tasks",
        "DJANGO_SETTINGS_MODULE": "coordinator.settings",
        "Q_WORKERS": os.environ.get("BENCH_Q_WORKERS", "2"),
        "LOG_LEVEL": "WARNING",
        "REDIS_URL": "",
    }
    os.environ.update(common)
    with _admin_conn(base) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        import django

        django.setup()
        from django.core.management import call_command

        from bench.report import median, percentile, write_section
        from coordinator.models import Role, User

        call_command("migrate", verbosity=0)
        user = User.objects.create_user("bench@example.com", "bench-password", role=Role.ADMIN)
        if args.schedules:
            _use_broker(LISTEN_NOTIFY_BROKER)
            print("schedules", many_schedules(user, _env(**common), 1000 if quick else 10_000), flush=True)
            return
        results: dict[str, dict[str, Any]] = {}
        brokers = {
            "LISTEN/NOTIFY broker": _env(**common),
            "stock django-q2 ORM broker": _env(**{**common, "DJANGO_SETTINGS_MODULE": "bench.stock_broker_settings"}),
        }
        for label, env in brokers.items():
            _use_broker(LISTEN_NOTIFY_BROKER if env["DJANGO_SETTINGS_MODULE"] == "coordinator.settings" else None)
            row: dict[str, Any] = {}
            if not drain_only:
                with cluster(env):
                    warm_up(user)
                    lat = latency(user, n_latency)
                    row["p50"], row["p95"], row["p99"] = (percentile(lat, p) for p in (50, 95, 99))
            ids, row["enqueue_1"] = enqueue(user, n_throughput)
            with cluster(env):
                row["drain_1"] = drain(ids)
            ids, row["enqueue_2"] = enqueue(user, n_throughput)
            with cluster(env), cluster(env):
                row["drain_2"] = drain(ids)
            results[label] = row
            print(label, {k: round(v, 1) for k, v in row.items()}, flush=True)
        if product:
            _use_broker(LISTEN_NOTIFY_BROKER)
            product_report(user, results, _env(**common), n_latency, n_throughput, quick)
            return
        if drain_only:
            notify, stock = results["LISTEN/NOTIFY broker"], results["stock django-q2 ORM broker"]
            print(
                f"drain/s ours vs stock: 1 cluster {notify['drain_1']:.0f} vs {stock['drain_1']:.0f} "
                f"({notify['drain_1'] / stock['drain_1']:.1f}x), 2 clusters {notify['drain_2']:.0f} vs "
                f"{stock['drain_2']:.0f} ({notify['drain_2'] / stock['drain_2']:.1f}x)",
                flush=True,
            )
            return
        _use_broker(LISTEN_NOTIFY_BROKER)
        raw = raw_enqueue(200 if quick else 1000)
        print("raw async_task/s", raw, flush=True)
        once = exactly_once(user, n_once, _env(**common), workdir)
        print("exactly once", once, flush=True)
        export = big_export(user, n_rows)
        print("export", export, flush=True)

        notify, stock = results["LISTEN/NOTIFY broker"], results["stock django-q2 ORM broker"]
        lines = [
            "## Background jobs (issue 5)",
            "",
            f"PostgreSQL, a fresh database per run; clusters of {common['Q_WORKERS']} workers (`manage.py qcluster`); `noop` jobs "
            f"submitted through `job_create` (commit, `on_commit` → `async_task`, NOTIFY). Latency = "
            f"`started_at - created_at` of {n_latency} jobs arriving at 10/s; enqueue/s = {n_throughput} "
            f"`job_create` calls back to back from one process; drain/s = the same jobs run by idle clusters, first "
            f"claim to last finish. Stock = django-q2's own ORM broker with this project's `poll` of "
            f"{_poll()} s. Command: `.venv/bin/python -m bench.jobs{' --quick' if quick else ''}`.",
            "",
            "| broker | p50 ms | p95 ms | p99 ms | enqueue/s | drain/s, 1 cluster | drain/s, 2 clusters |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for label, row in results.items():
            lines.append(
                f"| {label} | {row['p50']:.1f} | {row['p95']:.1f} | {row['p99']:.1f} | "
                f"{median([row['enqueue_1'], row['enqueue_2']]):.0f} | {row['drain_1']:.0f} | "
                f"{row['drain_2']:.0f} |"
            )
        lines += [
            "",
            f"NOTIFY vs stock: p50 {stock['p50'] / notify['p50']:.1f}x lower, drain with two clusters "
            f"{notify['drain_2'] / stock['drain_2']:.1f}x higher.",
            "",
            f"Raw `async_task` enqueue outside a transaction with `CONN_MAX_AGE=0` (the stock broker calls "
            f"`close_old_connections()` on every call, so it reconnects each time): stock {raw['stock']:.0f}/s, "
            f"ours {raw['notify']:.0f}/s ({raw['notify'] / raw['stock']:.1f}x). `job_create` itself queues inside a "
            f"transaction, where neither broker reconnects.",
            "",
            f"Exactly once: {once['jobs']} `bench.mark` jobs across two clusters in {once['seconds']:.1f} s: "
            f"**{once['duplicates']} duplicate executions**, {once['lost']} lost.",
            "",
            f"CSV export of {export['rows']:,} job rows: **{export['seconds']:.1f} s**, file {export['size_mb']:.0f} MB, "
            f"peak RSS growth **{export['peak_growth_mb']:.1f} MB**.",
            "",
            "Targets (issue 5): p50 < 20 ms and p95 < 50 ms with NOTIFY; ≥ 200 no-op jobs/s; 1M-row export < 60 s "
            "with < 100 MB growth; 0 duplicates in 10,000 jobs.",
        ]
        markdown = "\n".join(lines)
        print(markdown)
        if not quick:
            write_section("jobs", markdown)
    finally:
        from django.db import connections

        connections.close_all()
        with _admin_conn(base) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def delayed(user: Any, env: dict[str, str], n: int) -> list[float]:
    """Start minus `run_after`, in ms, of n jobs each delayed 2 to 12 s (submitted at 20/s)."""
    from datetime import timedelta

    from django.utils import timezone

    from jobs.models import Job
    from jobs.services import job_create

    with cluster(env):
        warm_up(user)
        ids = []
        for i in range(n):
            due = timezone.now() + timedelta(seconds=2 + (i % 50) * 0.2)
            ids.append(job_create(type="noop", data={}, user=user, run_after=due).pk)
            time.sleep(0.05)
        wait_done(ids, 120)
    jobs = Job.objects.filter(pk__in=ids)
    return [(job.started_at - job.run_after).total_seconds() * 1000 for job in jobs if job.started_at and job.run_after]


def many_schedules(user: Any, env: dict[str, str], n: int) -> dict[str, Any]:
    """n cron schedules all due at the same minute, two clusters: when they started, and twice?"""
    from datetime import timedelta

    from django.db.models import Count, Max
    from django.utils import timezone

    from jobs.models import Job, JobSchedule, JobScheduleRun

    now = timezone.now()
    minute = (now + timedelta(seconds=80)).replace(second=0, microsecond=0)  # 20 to 80 s ahead
    JobSchedule.objects.bulk_create(
        JobSchedule(
            owner=user,
            type="noop",
            data={},
            cron=f"{minute.minute} {minute.hour} * * *",
            timezone="UTC",
            next_run_at=minute,
        )
        for _ in range(n)
    )
    with cluster(env), cluster(env):
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if JobScheduleRun.objects.filter(job__status="success").count() >= n:
                break
            time.sleep(1)
        JobSchedule.objects.update(enabled=False)
    from django_q.models import OrmQ

    runs = JobScheduleRun.objects.filter(occurrence=minute)
    jobs = Job.objects.filter(schedule_runs__occurrence=minute)
    last = jobs.aggregate(last=Max("started_at"), fired=Max("created_at"), queued=Max("queued_at"))
    doubled = runs.values("schedule_id").annotate(n=Count("id")).filter(n__gt=1).count()

    def since_minute(moment: Any) -> float:
        return (moment - minute).total_seconds() if moment else float("nan")

    return {
        "schedules": n,
        "runs": runs.count(),
        "jobs": runs.exclude(job=None).count(),
        "started": jobs.exclude(started_at=None).count(),
        # Fired: the job and run rows exist; queued: handed to django-q2; started: claimed by a worker.
        "last_fired_s": since_minute(last["fired"]),
        "last_queued_s": since_minute(last["queued"]),
        "last_start_s": since_minute(last["last"]),
        "doubled": doubled,
        "load_average": os.getloadavg(),
        # What did not start in time must not delay the next part.
        "left": _drop_unstarted(Job, OrmQ),
    }


def _drop_unstarted(job_model: Any, queue_model: Any) -> int:
    left = job_model.objects.filter(status="fresh").delete()[0]
    queue_model.objects.all().delete()
    return int(left)


def isolation(user: Any, env: dict[str, str], n: int) -> dict[str, list[float]]:
    """`default` latency (ms) with one worker per queue, without and with a long `exports` job."""
    from jobs.services import job_create

    one = {**env, "Q_WORKERS": "1"}
    out = {}
    with cluster(one, "--queue", "exports"), cluster(one, "--queue", "default"):
        warm_up(user)
        out["alone"] = latency(user, n, gap=0.05)
        held = job_create(type="bench.hold", data={"seconds": 30.0}, user=user).pk
        time.sleep(1)
        out["export running"] = latency(user, n, gap=0.05)
        from jobs.models import Job

        out["export status"] = [1.0 if Job.objects.get(pk=held).status == "started" else 0.0]
    return out


def product_report(
    user: Any, results: dict[str, dict[str, Any]], env: dict[str, str], n_latency: int, n_throughput: int, quick: bool
) -> None:
    from bench.report import median, percentile, write_section

    lateness = delayed(user, env, 100 if quick else 200)
    print("delayed lateness ms p50/p95", percentile(lateness, 50), percentile(lateness, 95), flush=True)
    sched = many_schedules(user, env, 1000 if quick else 10_000)
    print("schedules", sched, flush=True)
    iso = isolation(user, env, 50 if quick else 100)
    print("isolation", {k: (percentile(v, 50), percentile(v, 95)) for k, v in iso.items()}, flush=True)
    notify, stock = results["LISTEN/NOTIFY broker"], results["stock django-q2 ORM broker"]
    lines = [
        "## Jobs as a product (issue 19)",
        "",
        f"Same machine and database setup as above, one run (`.venv/bin/python -m bench.jobs --product"
        f"{' --quick' if quick else ''}`), clusters of {env['Q_WORKERS']} workers. Today's figures before issue 19: "
        "282 no-op jobs/s with two clusters, enqueue-to-start p50 7.6 ms.",
        "",
        "| broker | p50 ms | p95 ms | enqueue/s | drain/s, 1 cluster | drain/s, 2 clusters |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, row in results.items():
        lines.append(
            f"| {label} | {row['p50']:.1f} | {row['p95']:.1f} | {median([row['enqueue_1'], row['enqueue_2']]):.0f} | "
            f"{row['drain_1']:.0f} | {row['drain_2']:.0f} |"
        )
    lines += [
        "",
        f"{n_latency} jobs at 10/s for latency, {n_throughput} for enqueue/drain. NOTIFY vs stock in this run: p50 "
        f"{stock['p50'] / notify['p50']:.1f}x lower, drain with two clusters {notify['drain_2'] / stock['drain_2']:.2f}x.",
        "",
        f"**Delayed jobs** ({len(lateness)} `noop` jobs, `run_after` 2 to 12 s ahead, one cluster): start minus "
        f"`run_after` p50 **{percentile(lateness, 50):.0f} ms**, p95 **{percentile(lateness, 95):.0f} ms**, max "
        f"{max(lateness):.0f} ms (target: p95 < 1 s). The stock broker has no delayed start to compare with "
        "(django-q2 has no per-task delay; its scheduler runs every 30 s).",
        "",
        f"**{sched['schedules']:,} schedules due in the same minute** (cron, two clusters): {sched['runs']:,} runs, "
        f"{sched['jobs']:,} jobs, {sched['started']:,} started; the last fired {sched['last_fired_s']:.1f} s, queued "
        f"{sched['last_queued_s']:.1f} s and started **{sched['last_start_s']:.1f} s** after the minute began "
        f"(target: all started within 60 s); **{sched['doubled']} occurrences started twice**; load average "
        f"{', '.join(f'{load:.1f}' for load in sched['load_average'])} at the end.",
        "",
        f"**Queue isolation** (one cluster `--queue exports`, one `--queue default`, one worker each; {len(iso['alone'])} "
        f"`noop` jobs at 20/s): `default` p50/p95 {percentile(iso['alone'], 50):.1f} / {percentile(iso['alone'], 95):.1f} ms "
        f"with nothing on `exports`, {percentile(iso['export running'], 50):.1f} / "
        f"{percentile(iso['export running'], 95):.1f} ms while a 30 s job held the `exports` worker "
        f"({'still running at the end' if iso['export status'][0] else 'finished early'}).",
    ]
    markdown = "\n".join(lines)
    print(markdown)
    if not quick:
        write_section("jobs-product", markdown)


def _poll() -> float:
    from django.conf import settings

    return float(settings.Q_CLUSTER.get("poll", 0.2))


LISTEN_NOTIFY_BROKER = "jobs.broker.ListenNotifyBroker"


def _use_broker(broker_class: str | None) -> None:
    # The bench process enqueues with the broker under test (Conf is read once at import).
    from django_q.conf import Conf

    Conf.BROKER_CLASS = broker_class


if __name__ == "__main__":
    main(sys.argv[1:])
