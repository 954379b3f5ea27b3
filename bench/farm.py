"""Task farm benchmark: `python -m bench.farm [--quick]`.

Drives, with the real `taskfarm-worker` client (8 processes, each task claimed, updated to 100 and
marked done: 4 requests per task):
  * our server on PostgreSQL and on SQLite,
  * the reference `taskfarm==0.4.0` server (gunicorn, 4 workers) on PostgreSQL and on SQLite,
  * a floor: the same client loop against a trivial authenticated endpoint of ours (`GET /api/token`
    with the token), i.e. what the client and this machine allow at best,
  * our batch path alone on PostgreSQL (claim and complete 100 at a time, 8 clients).
Ours runs under granian (one worker process per core, keep-alive), as `manage.py serve` runs it by
default, the reference under gunicorn (4 sync workers), on the same PostgreSQL server, neither with an access log (the
clients count every error answer, retried ones included: `bench.farm_client`); every scenario
uses its own database, created and dropped here. Figures go to docs/benchmarks.md (section farm).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import psutil
import requests

from bench.report import write_section
from coordinator.management.commands.serve import granian_argv
from tests.live import free_port

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"
PY = sys.executable
BIN = Path(PY).parent
REF_VENV = VAR / "bench-taskfarm-ref-venv"
REF_REQUIREMENTS = ROOT / "bench" / "requirements-taskfarm-ref.txt"
PG_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")
USER, PASSWORD = "bench@example.com", "bench-password-1"
REF_USER = "bench"
SECRET = "bench-secret-key-not-for-production-0123456789"
WORKERS = 8
SERVER_WORKERS = 4  # the reference's gunicorn workers (the setup)
# Ours as `manage.py serve` runs it by default: one worker per core (`WEB_CONCURRENCY` overrides).
OURS_WORKERS = int(os.environ.get("WEB_CONCURRENCY") or os.cpu_count() or 2)
# Our server as production runs it (granian, keep-alive); `--ours-server gunicorn` for comparison.
OURS_SERVER = "granian"
SCENARIOS = {
    "ours-pg": "ours, PostgreSQL",
    "floor": "floor (ours, no-op)",
    "batch": "batch of 100, PostgreSQL",
    "ours-sqlite": "ours, SQLite",
    "ref-pg": "reference, PostgreSQL",
    "ref-sqlite": "reference, SQLite",
}


@dataclass
class Result:
    name: str
    tasks: int
    seconds: float = float("nan")
    claimed: int = 0
    duplicates: int = 0
    client_errors: list[str] = field(default_factory=list)
    http_errors: int = 0
    server_5xx: int = 0
    done: int | None = None
    note: str = ""
    rounds: list[float] = field(default_factory=list)
    # CPU seconds spent while the scenario ran: the client processes, the server's processes
    # (WSGI server: main process and workers) and the database's backends serving it (PostgreSQL only).
    cpu_client: float = 0.0
    cpu_server: float = 0.0
    cpu_database: float = 0.0

    def cpu_ms_per_task(self, seconds: float) -> float:
        return 1000 * seconds / self.claimed if self.claimed else float("nan")

    @property
    def rate(self) -> float:
        return self.claimed / self.seconds if self.seconds and self.seconds == self.seconds else float("nan")


# --- databases ------------------------------------------------------------------------------


def pg_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(sql)


@contextmanager
def pg_database(name: str) -> Iterator[str]:
    pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    pg_admin(f'CREATE DATABASE "{name}"')
    parsed = urlparse(PG_URL)
    try:
        yield parsed._replace(path=f"/{name}").geturl()
    finally:
        pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- CPU accounting -------------------------------------------------------------------------

# Base URL of each running server -> its main process's pid, and its PostgreSQL database's name.
SERVER_PIDS: dict[str, int] = {}
SERVER_DATABASES: dict[str, str] = {}


def pg_name(database_url: str) -> str | None:
    return urlparse(database_url).path.lstrip("/") if database_url.startswith("postgres") else None


def _cpu(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
        return float(times.user + times.system)
    except psutil.Error:
        return 0.0


def server_cpu(url: str) -> float:
    """CPU seconds so far of the WSGI server's main process and workers behind `url` (workers live as long as
    the server, so differences of two readings are what they spent in between)."""
    pid = next((p for base, p in SERVER_PIDS.items() if url.startswith(base)), None)
    if pid is None:
        return 0.0
    try:
        master = psutil.Process(pid)
        return _cpu(master) + sum(_cpu(child) for child in master.children(recursive=True))
    except psutil.Error:
        return 0.0


def database_cpu(url: str) -> dict[int, float]:
    """CPU seconds so far of each PostgreSQL backend connected to the database behind `url` (by pid)."""
    database = next((name for base, name in SERVER_DATABASES.items() if url.startswith(base)), None)
    if not database:
        return {}
    found: dict[int, float] = {}
    for process in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if cmdline.startswith("postgres: ") and f" {database} " in cmdline:
            found[process.pid] = _cpu(process)
    return found


# --- servers --------------------------------------------------------------------------------


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            requests.get(url, timeout=2)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def gunicorn_argv(argv: list[str], port: int) -> list[str]:
    return [
        *argv,
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(SERVER_WORKERS),
        "--log-level",
        "warning",
        "--timeout",
        "120",
    ]


@contextmanager
def serve_http(
    argv: Callable[[int], list[str]], env: dict[str, str], cwd: Path, log: Path, probe: str, database: str | None = None
) -> Iterator[str]:
    """Start a WSGI server (`argv(port)`) on a free port; yields its base URL."""
    port = free_port()
    with log.open("ab") as out:
        # A session of its own: the server's workers are stopped with it, whatever happens here.
        proc = subprocess.Popen(
            argv(port), cwd=cwd, env=env, stdout=out, stderr=subprocess.DEVNULL, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    SERVER_PIDS[base] = proc.pid
    if database:
        SERVER_DATABASES[base] = database
    try:
        wait_http(base + probe, proc)
        yield base
    finally:
        SERVER_PIDS.pop(base, None)
        SERVER_DATABASES.pop(base, None)
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # any worker left behind


def ours_env(database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(
        {
            "DATABASE_URL": database_url,
            "DJANGO_SECRET_KEY": SECRET,
            "DJANGO_DEBUG": "0",
            "PYTHONPATH": str(ROOT),
            "DJANGO_SETTINGS_MODULE": "coordinator.settings",
            # Every client of the benchmark signs in from this one host and account, far more often
            # than the credential limits allow one address (docs/security.md).
            "CREDENTIAL_RATE_PER_ADDRESS": "1000000/min",
            "CREDENTIAL_RATE_PER_ACCOUNT": "1000000/min",
        }
    )
    return env


@contextmanager
def our_server(database_url: str, log: Path) -> Iterator[str]:
    env = ours_env(database_url)
    subprocess.run([PY, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    subprocess.run(
        [PY, "manage.py", "createuser", USER, "--password", PASSWORD],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    if OURS_SERVER == "granian":

        def argv(port: int) -> list[str]:
            # As `manage.py serve --behind-proxy` runs it (no access log: the clients count errors).
            return granian_argv(port=port, workers=OURS_WORKERS)
    else:

        def argv(port: int) -> list[str]:
            return gunicorn_argv([str(BIN / "gunicorn"), "coordinator.wsgi:application"], port)

    with serve_http(argv, env, ROOT, log, "/healthz", pg_name(database_url)) as base:
        yield base + "/api/"


def ensure_ref_venv() -> Path:
    py = REF_VENV / "bin" / "python"
    stamp = REF_VENV / "requirements.txt"
    if not py.exists() or not stamp.exists() or stamp.read_text() != REF_REQUIREMENTS.read_text():
        shutil.rmtree(REF_VENV, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(REF_VENV)], check=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "-r", str(REF_REQUIREMENTS)], check=True
        )
        shutil.copy(REF_REQUIREMENTS, stamp)
    return py


REF_INIT = """
from taskfarm import app, db
from taskfarm.models import User
with app.app_context():  # required by current Flask-SQLAlchemy, harmless with 2.x
    db.create_all()
    user = User(username={user!r})
    user.hash_password({password!r})
    db.session.add(user)
    db.session.commit()
"""


@contextmanager
def reference_server(database_url: str, log: Path) -> Iterator[str]:
    py = ensure_ref_venv()
    sa_url = database_url.replace("postgres://", "postgresql://", 1)
    env = {"PATH": os.environ.get("PATH", ""), "DATABASE_URL": sa_url, "SECRET_KEY": SECRET}
    subprocess.run(
        [str(py), "-c", REF_INIT.format(user=REF_USER, password=PASSWORD)],
        env=env,
        check=True,
        cwd=tempfile.gettempdir(),
    )

    def argv(port: int) -> list[str]:
        return gunicorn_argv([str(py.parent / "gunicorn"), "taskfarm:app"], port)

    with serve_http(argv, env, Path(tempfile.gettempdir()), log, "/", pg_name(database_url)) as base:
        yield base + "/api/"


# --- clients --------------------------------------------------------------------------------


@dataclass
class Driven:
    results: list[dict[str, Any]]  # one JSON result per client process
    seconds: float
    note: str
    cpu_server: float
    cpu_database: float
    clients: int  # client processes started (each should report one result)


def client_env() -> dict[str, str]:
    """The client processes' environment: a batch job's few variables. `requests` reads the whole
    environment twice per request (looking for proxy settings), so a developer shell's or a CI
    runner's variables would otherwise count as client work, alike for every server measured."""
    keep = {name: os.environ[name] for name in ("PATH", "HOME", "LANG", "TMPDIR") if name in os.environ}
    return {**keep, "PYTHONPATH": str(ROOT)}


def drive(
    mode: str, url: str, user: str, targets: list[str], extra: list[str], timeout: float, workdir: Path
) -> Driven:
    """Start the client processes, release them together, collect their JSON results and the CPU the
    server and its database spent meanwhile."""
    go = workdir / f"go-{mode}-{time.monotonic_ns()}"
    procs = [
        subprocess.Popen(
            [PY, "-m", "bench.farm_client", mode, url, user, PASSWORD, target, str(go), *extra],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=client_env(),
        )
        for target in targets
    ]
    note = ""
    for proc in procs:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if line != "ready":
            proc.wait()
            raise RuntimeError(f"client did not start: {line} {proc.stderr.read() if proc.stderr else ''}")
    server_before, database_before = server_cpu(url), database_cpu(url)
    go.touch()
    released = time.time()
    results: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.terminate()  # the client then prints what it saw (`bench.farm_client`)
            try:
                out, _ = proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
            note = f"stopped after {timeout:.0f}s"
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        if lines:
            results.append(json.loads(lines[-1]))
    server_spent = server_cpu(url) - server_before
    database_after = database_cpu(url)
    database_spent = sum(seconds - database_before.get(pid, 0.0) for pid, seconds in database_after.items())
    go.unlink(missing_ok=True)
    end = max((r["end"] for r in results), default=time.time())
    return Driven(results, end - released, note, server_spent, database_spent, len(procs))


def http_errors(results: list[dict[str, Any]]) -> tuple[int, int]:
    """(answers >= 400, answers >= 500) the clients received, retried ones included (`bench.farm_client`;
    attempts that got no answer at all are reported in the note)."""
    fives = sum(r["http"]["5xx"] for r in results)
    return sum(r["http"]["4xx"] for r in results) + fives, fives


def done_count(url: str, user: str, run: str) -> int | None:
    try:
        session = requests.Session()
        tok = session.get(url + "token", auth=(user, PASSWORD), timeout=30).json()["token"]
        return int(
            session.get(f"{url}runs/{run}", params={"info": "numDone"}, auth=(tok, ""), timeout=30).json()["numDone"]
        )
    except Exception:  # the server may be wedged; the table says so
        return None


def create_run(url: str, user: str, n: int) -> str:
    from taskfarm_worker import TaskFarm

    return str(TaskFarm(user, PASSWORD, numTasks=n, url_base=url).uuid)


def summarise(name: str, n: int, driven: Driven, done: int | None) -> Result:
    results, note = driven.results, driven.note
    claims = Counter(t for r in results for t in r["tasks"])
    errors4, errors5 = http_errors(results)
    result = Result(
        name=name,
        tasks=n,
        seconds=driven.seconds,
        claimed=sum(r["count"] for r in results),
        duplicates=sum(c - 1 for c in claims.values()),
        client_errors=[e for r in results for e in r["errors"]],
        http_errors=errors4,
        server_5xx=errors5,
        done=done,
        note=note,
        cpu_client=sum(r.get("cpu", 0.0) for r in results),
        cpu_server=driven.cpu_server,
        cpu_database=driven.cpu_database,
    )
    if len(results) < driven.clients:
        result.note = (
            result.note + f"; {driven.clients - len(results)} of {driven.clients} clients reported nothing"
        ).strip("; ")
    lost = sum(r["http"]["lost"] for r in results)
    if lost:
        result.note = (result.note + f"; {lost} attempts got no answer (retried by the client)").strip("; ")
    cpu = "/".join(
        f"{result.cpu_ms_per_task(x):.2f}" for x in (result.cpu_client, result.cpu_server, result.cpu_database)
    )
    print(
        f"{name:28s} {result.rate:9.1f} tasks/s  claimed={result.claimed} dup={result.duplicates} "
        f"http>=400={errors4} 5xx={errors5} client_errors={len(result.client_errors)} done={done} "
        f"cpu ms/task client/server/db={cpu} {note}",
        flush=True,
    )
    return result


def farm_scenario(name: str, url: str, user: str, n: int, timeout: float, workdir: Path) -> Result:
    run = create_run(url, user, n)
    driven = drive("worker", url, user, [run] * WORKERS, [], timeout, workdir)
    return summarise(name, n, driven, done_count(url, user, run))


def merge(name: str, parts: list[Result]) -> Result:
    """One row from several rounds: the median rate, everything else summed."""
    total = Result(name=name, tasks=sum(p.tasks for p in parts))
    total.claimed = sum(p.claimed for p in parts)
    total.duplicates = sum(p.duplicates for p in parts)
    total.client_errors = [e for p in parts for e in p.client_errors]
    total.http_errors = sum(p.http_errors for p in parts)
    total.server_5xx = sum(p.server_5xx for p in parts)
    dones = [p.done for p in parts if p.done is not None]
    total.done = sum(dones) if dones else None
    total.note = "; ".join(sorted({p.note for p in parts if p.note}))
    total.cpu_client = sum(p.cpu_client for p in parts)
    total.cpu_server = sum(p.cpu_server for p in parts)
    total.cpu_database = sum(p.cpu_database for p in parts)
    rates = [p.rate for p in parts if p.rate == p.rate]
    median_rate = statistics.median(rates) if rates else float("nan")
    total.seconds = total.claimed / median_rate if median_rate else float("nan")
    total.rounds = [round(r, 1) for r in rates]
    return total


def main() -> None:
    global OURS_SERVER, OURS_WORKERS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--tasks", type=int, default=None, help="tasks per scenario, split over the rounds")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (medians are reported)")
    parser.add_argument("--batch-tasks", type=int, default=None)
    parser.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    parser.add_argument(
        "--only", default="", help=f"comma-separated subset of {','.join(SCENARIOS)} (implies --no-write)"
    )
    parser.add_argument(
        "--ours-server",
        choices=("granian", "gunicorn"),
        default="granian",
        help="the WSGI server in front of ours (the reference always runs under gunicorn)",
    )
    parser.add_argument(
        "--ours-workers",
        type=int,
        default=None,
        help=f"worker processes of our server (default: one per core, as `serve`: {OURS_WORKERS})",
    )
    args = parser.parse_args()
    OURS_SERVER = args.ours_server
    OURS_WORKERS = args.ours_workers or OURS_WORKERS
    only = set(filter(None, args.only.split(","))) or set(SCENARIOS)
    if only - set(SCENARIOS):
        parser.error(f"unknown scenarios: {', '.join(sorted(only - set(SCENARIOS)))}")
    # Five rounds of about 700 tasks: the ratio to the reference sits near its target, and one
    # round on this shared machine varies by some 5%, so the median needs more than three.
    n = args.tasks or (200 if args.quick else 3500)
    rounds = args.rounds or (1 if args.quick else 5)
    per_round = max(WORKERS, -(-n // rounds))  # at least n tasks in all
    n_batch = args.batch_tasks or (20_000 if args.quick else 100_000)
    timeout = 120.0 if args.quick else 600.0
    tag = f"{os.getpid()}"
    workdir = VAR / f"bench-farm-{tag}"
    workdir.mkdir(parents=True, exist_ok=True)
    parts: dict[str, list[Result]] = {key: [] for key in SCENARIOS}
    load_before = os.getloadavg()[0]
    try:
        with ExitStack() as stack:
            servers: dict[str, tuple[str, str]] = {}  # the servers' own logs go to files in workdir
            if only & {"ours-pg", "floor", "batch"}:
                db_url = stack.enter_context(pg_database(f"bench_farm_ours_{tag}"))
                servers["ours-pg"] = (stack.enter_context(our_server(db_url, workdir / "ours-pg.log")), USER)
            if "ours-sqlite" in only:
                sqlite_url = f"sqlite:///{workdir / 'ours.sqlite3'}"
                servers["ours-sqlite"] = (
                    stack.enter_context(our_server(sqlite_url, workdir / "ours-sqlite.log")),
                    USER,
                )
            if "ref-pg" in only:
                db_url = stack.enter_context(pg_database(f"bench_farm_ref_{tag}"))
                servers["ref-pg"] = (stack.enter_context(reference_server(db_url, workdir / "ref-pg.log")), REF_USER)
            # The servers run side by side and the scenarios take turns, so that the load others put
            # on this shared machine falls on all of them alike; each row reports the median round.
            order = [key for key in ("ours-pg", "ref-pg", "floor", "ours-sqlite") if key in only]
            for r in range(rounds if order else 0):
                for key in order[r % len(order) :] + order[: r % len(order)]:
                    url, user = servers["ours-pg" if key == "floor" else key]
                    if key == "floor":
                        floor = drive("floor", url, user, [str(per_round // WORKERS)] * WORKERS, [], timeout, workdir)
                        parts[key].append(summarise(SCENARIOS[key], per_round, floor, None))
                    else:
                        parts[key].append(farm_scenario(SCENARIOS[key], url, user, per_round, timeout, workdir))
            if "batch" in only:
                url, user = servers["ours-pg"]
                run = create_run(url, user, n_batch)
                batch = drive("batch", url, user, [run] * WORKERS, ["100"], timeout, workdir)
                parts["batch"].append(summarise(SCENARIOS["batch"], n_batch, batch, done_count(url, user, run)))
        if "ref-sqlite" in only:
            with reference_server(f"sqlite:///{workdir / 'ref.sqlite3'}", workdir / "ref-sqlite.log") as url:
                parts["ref-sqlite"].append(farm_scenario(SCENARIOS["ref-sqlite"], url, REF_USER, n, timeout, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if any(not parts[key] for key in SCENARIOS):
        return
    results = [merge(SCENARIOS[key], parts[key]) for key in SCENARIOS]
    markdown = report(results, n, rounds, n_batch, args.quick)
    markdown += (
        f"\n* 1-minute load average of the machine (shared with other test runs): {load_before:.1f} at the "
        f"start, {os.getloadavg()[0]:.1f} at the end."
    )
    print(markdown)
    if not args.no_write:
        write_section("farm", markdown)


def report(results: list[Result], n: int, rounds: int, n_batch: int, quick: bool) -> str:
    by = {r.name: r for r in results}
    ours_sqlite, batch = by[SCENARIOS["ours-sqlite"]], by[SCENARIOS["batch"]]
    rows = [
        "| scenario | tasks/s (median) | rounds | tasks claimed | duplicates | HTTP ≥400 (5xx) | client errors "
        "| done (server) | note |",
        "|---|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        errors = "; ".join(sorted(set(r.client_errors)))[:200]
        rows.append(
            f"| {r.name} | {r.rate:.1f} | {', '.join(map(str, r.rounds))} | {r.claimed} | {r.duplicates} | {r.http_errors} ({r.server_5xx}) | "
            f"{len(r.client_errors)} | {'' if r.done is None else r.done} | {r.note}{' ' + errors if errors else ''} |"
        )
    ours, ref, floor = by[SCENARIOS["ours-pg"]], by[SCENARIOS["ref-pg"]], by[SCENARIOS["floor"]]
    by_round = ", ".join(f"{a / b:.2f}" for a, b in zip(ours.rounds, ref.rounds, strict=False))
    lines = [
        "### Task farm (`python -m bench.farm`" + (" --quick" if quick else "") + ")",
        "",
        f"{WORKERS} client processes using the real `taskfarm-worker` 0.4.0 client, {n} tasks per scenario in "
        f"{rounds} interleaved rounds (servers side by side, scenarios taking turns; median round reported; each task "
        f"claimed, updated to 100 and marked done: 4 requests per task); ours under {OURS_SERVER} with "
        f"{OURS_WORKERS} worker processes ({'keep-alive, ' if OURS_SERVER == 'granian' else ''}as production "
        f"serves it), the reference under gunicorn with {SERVER_WORKERS} sync workers, same PostgreSQL server, a "
        f"fresh database per scenario. The floor is the same 8-process loop of 4 requests per task against "
        f"`GET /api/token` (token auth, no work, through the same Django and DRF stack). Client processes run with a minimal environment (PATH, HOME, LANG), like batch jobs: "
        f"`requests` scans every environment variable twice per request. HTTP errors are counted by the clients: "
        f"every answer of 400 or more a server sent, the ones `requests` retried by itself included (urllib3's "
        f"retry counting; attempts that got no answer are listed in the note), so both servers run without an access log, "
        f"as deployed. The batch row claims and completes {n_batch} tasks 100 at a time with 8 clients.",
        "",
        *rows,
        "",
        f"* ours / reference on PostgreSQL: **{ours.rate / ref.rate:.2f} times** (target ≥ 2); round by round "
        f"(each pair measured side by side): {by_round}"
        if ref.rate == ref.rate and ref.rate > 0
        else "* reference on PostgreSQL: no rate",
        f"* ours on PostgreSQL / floor: **{100 * ours.rate / floor.rate:.0f}%**; "
        f"ours on SQLite / floor: **{100 * ours_sqlite.rate / floor.rate:.0f}%**",
        f"* batch path: **{batch.rate:.0f} tasks/s** (target ≥ 10,000)",
        "",
        *cpu_table(results, ref, floor),
    ]
    return "\n".join(lines)


def cpu_table(results: list[Result], ref: Result, floor: Result) -> list[str]:
    """Where each task's CPU went (every round summed, divided by the tasks claimed), and what that
    allows on this machine's cores when CPU is the limit."""
    cores = os.cpu_count() or 1
    rows = [
        f"CPU per task in milliseconds (all rounds; clients = the 8 client processes, server = the WSGI server's "
        f"processes, database = the PostgreSQL backends serving that server). This machine has {cores} cores, so "
        f"with every process busy a scenario cannot pass {cores} * 1000 / total tasks/s.",
        "",
        "| scenario | clients | server | database | total | CPU-bound ceiling (tasks/s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        parts = [r.cpu_ms_per_task(x) for x in (r.cpu_client, r.cpu_server, r.cpu_database)]
        total = sum(parts)
        rows.append(
            f"| {r.name} | {parts[0]:.2f} | {parts[1]:.2f} | {parts[2]:.2f} | {total:.2f} | "
            f"{cores * 1000 / total if total else float('nan'):.0f} |"
        )
    if ref.rate == ref.rate and ref.rate > 0:
        ours = next(r for r in results if r.name == SCENARIOS["ours-pg"])
        ours_sd = ours.cpu_ms_per_task(ours.cpu_server) + ours.cpu_ms_per_task(ours.cpu_database)
        ref_sd = ref.cpu_ms_per_task(ref.cpu_server) + ref.cpu_ms_per_task(ref.cpu_database)
        rows += [
            "",
            f"* server + database CPU per task on PostgreSQL: ours **{ours_sd:.2f} ms**, the reference "
            f"{ref_sd:.2f} ms: **{ours_sd / ref_sd:.2f}** of the reference's (target ≤ 1/3 = 0.33).",
        ]
    return rows


if __name__ == "__main__":
    main()
