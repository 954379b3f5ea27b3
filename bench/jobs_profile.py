"""Queries and transactions per no-op job, step by step, on PostgreSQL (issue 5's drain target).

    .venv/bin/python -m bench.jobs_profile [jobs]

Creates its own database (`bench_jobs_profile_<pid>`, next to `BENCH_DATABASE_URL` /
`DATABASE_URL`) and drops it at the end. Runs `jobs` no-op jobs (default 20) in-process the way a
cluster does: `job_create` (commit, `on_commit` → `async_task` + NOTIFY), the broker's take,
`jobs.tasks.job_run`, the broker's ack; prints the mean statements, commits and milliseconds
per step (the time is in-process, without django-q2's own queues and processes).
A "commit" is an outermost `atomic` commit or a statement run in autocommit mode.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from bench.jobs import _admin_conn, _db_urls


class Counting:
    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.statements = 0
        self.commits = 0
        self.sql: Counter[str] = Counter()

    def __call__(self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        self.statements += 1
        self.sql[" ".join(str(sql).split())[:90]] += 1
        if not self.connection.in_atomic_block and self.connection.get_autocommit():
            self.commits += 1
        return execute(sql, params, many, context)


def main(argv: list[str]) -> None:
    n = int(argv[0]) if argv else 20
    base, url, name = _db_urls()
    name = name.replace("bench_jobs_", "bench_jobs_profile_")
    url = url.rsplit("/", 1)[0] + "/" + name
    os.environ.update(
        {"DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "coordinator.settings", "REDIS_URL": "", "LOG_LEVEL": "WARNING"}
    )
    with _admin_conn(base) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connection
        from django_q.brokers import get_broker
        from django_q.signing import SignedPackage

        from coordinator.models import Role, User
        from jobs import tasks
        from jobs.services import job_create

        call_command("migrate", verbosity=0)
        user = User.objects.create_user("profile@example.com", "profile-password", role=Role.ADMIN)
        broker = get_broker()
        broker._next_sweep = float("inf")  # the sweep runs every few seconds, not per job
        real_commit = connection.commit
        steps = ["enqueue", "dequeue", "run", "ack"]
        totals = {s: [0, 0] for s in steps}
        seconds = dict.fromkeys(steps, 0.0)
        sql: Counter[str] = Counter()
        for i in range(n + 2):
            counters = {s: Counting(connection) for s in steps}
            current: list[Counting] = []

            def commit(current: list[Counting] = current) -> None:
                current[0].commits += 1
                real_commit()

            connection.commit = commit  # type: ignore[method-assign]
            try:
                for step in steps:
                    current[:] = [counters[step]]
                    start = time.perf_counter()
                    with connection.execute_wrapper(counters[step]):
                        if step == "enqueue":
                            job_create(type="noop", data={}, user=user)
                        elif step == "dequeue":
                            taken = broker.dequeue()
                            assert taken and len(taken) == 1, taken
                        elif step == "run":
                            task = SignedPackage.loads(taken[0][1])
                            assert tasks.job_run(*task["args"]) == "success"
                        else:
                            broker.acknowledge(taken[0][0])
                    if i >= 2:
                        seconds[step] += time.perf_counter() - start
            finally:
                connection.commit = real_commit  # type: ignore[method-assign]
            if i >= 2:  # the first two warm caches (content types, registry, prepared plans)
                for step in steps:
                    totals[step][0] += counters[step].statements
                    totals[step][1] += counters[step].commits
                    sql.update(counters[step].sql)
        print(f"per no-op job, mean of {n} (statements / commits / ms):")
        for step in steps:
            print(
                f"  {step:8} {totals[step][0] / n:5.1f} / {totals[step][1] / n:4.1f} / {seconds[step] * 1000 / n:6.2f}"
            )
        print(
            f"  {'total':8} {sum(t[0] for t in totals.values()) / n:5.1f} / "
            f"{sum(t[1] for t in totals.values()) / n:4.1f} / {sum(seconds.values()) * 1000 / n:6.2f}"
        )
        worker = sum(seconds[s] for s in ("dequeue", "run", "ack")) * 1000 / n
        print(
            f"  cluster side (dequeue + run + ack): {worker:.2f} ms -> {1000 / worker:.0f} jobs/s for one "
            f"process doing it all in sequence"
        )
        for text, count in sql.most_common():
            print(f"  {count / n:4.1f}  {text}")
    finally:
        from django.db import connections

        connections.close_all()
        with _admin_conn(base) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main(sys.argv[1:])
