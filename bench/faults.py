"""Fault suite: `manage.py serve` under real load while faults are injected, one table at the end.

    python -m bench.faults [--settle SECONDS]

Starts a throwaway PostgreSQL cluster on a port of its own (`pg_createcluster`) and a throwaway
`redis-server`, never the shared ones, and `serve` against them, its day log on a small tmpfs of
its own (mounting one needs root; without it the full-disk scenario is left out). Load runs the
whole time:
- a job submitter (pytasks `POST /task`, retrying a refusal or a dropped connection);
- a device client (`POST /pool/heartbeat` with an `Idempotency-Key`, retrying with the same key)
  and a master client (`POST /pool/task` to that device, likewise);
- two real `taskfarm-worker` processes (the published client, `TaskFarmWorker`) working through a
  farm run of FARM_TASKS tasks created at the start of each fault; one that stops on an error (the
  client does not retry a POST that met a 503 or a dropped connection) is started again, as a
  batch system would, and the task it held returns to the run when its lease lapses;
- an SSE reader that reconnects with Last-Event-ID.

Faults, one after another, each followed by load for a while: `kill -9` of granian's main
process, the front door, daphne, the progress listener, the job cluster's sentinel and an idle
worker; a PostgreSQL restart; a Redis restart; the day log's disk full (then space again);
SIGTERM of `serve` (then started again).

Per fault: accepted (jobs, heartbeats, device tasks and farm tasks accepted in its window), lost
(accepted jobs not `success` at the end, heartbeats or device tasks missing, farm tasks not
`done`), duplicated (a job run twice, a heartbeat or device task stored twice, a farm task
finished by two workers), worker exits (taskfarm-worker processes that stopped on an error), and
the longest wait (from a request's first attempt until it was accepted, or from a job's
acceptance until it finished). Writes the table into docs/benchmarks.md ("Reliability").

`python -m bench.faults farm-worker URL USER PASSWORD RUNS OUT STOP` is one farm worker process.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import requests

from bench.report import machine_line, write_section

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
SETTLE_SECONDS = 12.0  # load after each fault (--settle)
FARM_TASKS = 20  # per farm run, one run per fault
FARM_WORKERS = 2
FARM_LEASE_SECONDS = 60  # a crashed worker's task returns to the run after this; longer than serve is down
JOURNAL_TMPFS = "16m"
JOURNAL_BEHIND_SECONDS = 5  # /healthz reports the day log behind after this (60 s by default)
LOW_DISK_BYTES = 256 * 1024  # /healthz reports a disk full below this (50 MB by default)
USER, PASSWORD = "ops@example.com", "a-long-secret-1"
PG_VERSION = next(iter(sorted(p.name for p in Path("/usr/lib/postgresql").glob("*"))), "")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Window:
    fault: str
    expected: str
    started: float
    ended: float = 0.0
    observed: str = ""
    stopped_in: float | None = None  # SIGTERM: how long `serve` took to stop


@dataclass
class Load:
    base: str
    marker: Path
    stop: threading.Event = field(default_factory=threading.Event)
    jobs: list[tuple[float, float, str]] = field(default_factory=list)  # first attempt, accepted, job uuid
    beats: list[tuple[float, float, str]] = field(default_factory=list)  # first attempt, accepted, key
    tasks: list[tuple[float, float, str]] = field(default_factory=list)  # device tasks, likewise
    streamed: Counter[int] = field(default_factory=Counter)
    # answers of 500 and up other than 503 (an outage must answer 503, never 500), by time
    server_errors: list[float] = field(default_factory=list)

    def note(self, status: int) -> None:
        if status >= 500 and status != 503:
            self.server_errors.append(time.time())

    def submit_jobs(self) -> None:
        while not self.stop.is_set():
            first = time.time()
            while not self.stop.is_set():
                try:
                    answer = requests.post(
                        f"{self.base}/task",
                        json={"type": "bench.mark", "args": {"path": str(self.marker)}},
                        timeout=10,
                    )
                    self.note(answer.status_code)
                    if answer.status_code == 200:
                        self.jobs.append((first, time.time(), answer.json()["id"]))
                        break
                except requests.RequestException:
                    pass
                time.sleep(0.2)
            time.sleep(0.1)

    def send_pool(self, path: str, token: str, body: dict[str, str], into: list[tuple[float, float, str]]) -> None:
        """POST /pool/<path> again and again, each with a new Idempotency-Key (also its body), a
        failed attempt retried with the same key: a retry must never create a second message."""
        while not self.stop.is_set():
            key, first = str(uuid.uuid4()), time.time()
            while not self.stop.is_set():
                try:
                    answer = requests.post(
                        f"{self.base}/pool/{path}",
                        json={**body, "body": key},
                        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key},
                        timeout=10,
                    )
                    self.note(answer.status_code)
                    if answer.status_code == 201:
                        into.append((first, time.time(), key))
                        break
                except requests.RequestException:
                    pass
                time.sleep(0.2)
            time.sleep(0.1)

    def read_stream(self, admin_token: str) -> None:
        """Reads the stream as `EventSource` does: a reconnect sends the last id it saw as
        `Last-Event-ID`, so an id counted twice is one the platform really sent twice."""
        last_seen: int | None = None
        while not self.stop.is_set():
            headers = {} if last_seen is None else {"Last-Event-ID": str(last_seen)}
            try:
                with requests.get(
                    f"{self.base}/progress/events?token={admin_token}",
                    stream=True,
                    timeout=(5, 30),
                    headers=headers,
                ) as answer:
                    frame_id, frame_has_data = None, False
                    for line in answer.iter_lines():
                        if self.stop.is_set():
                            return
                        if line.startswith(b"id: "):
                            frame_id = int(line[4:])
                        elif line.startswith(b"data: "):
                            frame_has_data = True
                        elif not line and frame_id is not None:
                            if frame_has_data:  # an event; an id alone closes the snapshot
                                self.streamed[frame_id] += 1
                            last_seen, frame_id, frame_has_data = frame_id, None, False
                        elif not line:
                            frame_has_data = False
            except requests.RequestException:
                time.sleep(0.5)


def health_components(base: str) -> dict[str, str]:
    """/healthz's components, whether it answers 200 or 503 (empty when it does not answer)."""
    try:
        body = requests.get(f"{base}/healthz", timeout=10).json()
    except (requests.RequestException, ValueError):
        return {}
    return dict(body.get("components") or body.get("extra", {}).get("components") or {})


@dataclass
class Farm:
    """Real `taskfarm-worker` processes on the runs the bench creates; one that stops on an error
    is started again a second later, as a batch system would."""

    url: str  # the client's url_base, ending in /api/
    work: Path
    stop: threading.Event = field(default_factory=threading.Event)
    runs: list[tuple[float, str]] = field(default_factory=list)  # created at, run uuid
    exits: list[tuple[float, str]] = field(default_factory=list)  # when a worker stopped on an error, and why
    processes: list[subprocess.Popen[str]] = field(default_factory=list)

    @property
    def files(self) -> list[str]:
        return [str(self.work / name) for name in ("farm-runs.txt", "farm-done.txt", "farm-stop")]

    def create_run(self) -> None:
        from taskfarm_worker import TaskFarm

        while True:
            try:
                run = TaskFarm(USER, PASSWORD, numTasks=FARM_TASKS, url_base=self.url)
                break
            except (RuntimeError, requests.RequestException):
                time.sleep(0.5)
        self.runs.append((time.time(), run.uuid))
        with open(self.files[0], "a") as runs:
            runs.write(f"{run.uuid}\n")

    def keep_worker(self) -> None:
        while not self.stop.is_set():
            worker = subprocess.Popen(
                [PYTHON, "-m", "bench.faults", "farm-worker", self.url, USER, PASSWORD, *self.files],
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            self.processes.append(worker)
            _, err = worker.communicate()
            if worker.returncode != 0 and not self.stop.is_set():
                last = err.strip().splitlines()[-1] if err.strip() else f"exit status {worker.returncode}"
                print(f"  a farm worker stopped: {last[:300]}", flush=True)
                error, _, detail = last.partition(": ")
                if "RemoteDisconnected" in detail:
                    detail = "connection closed without an answer"
                elif detail.startswith("[HTTP "):  # the client's "[HTTP 503]: Content: b'...'"
                    detail = detail.split(":", 1)[0]
                self.exits.append((time.time(), f"{error.rsplit('.', 1)[-1]}: {detail[:60]}"))
                time.sleep(1)

    def end(self) -> None:
        Path(self.files[2]).touch()
        self.stop.set()
        for worker in self.processes:
            if worker.poll() is None:
                worker.terminate()


def farm_worker(url: str, user: str, password: str, runs_path: str, done_path: str, stop_path: str) -> None:
    """One worker process: the published client's loop over every run the bench created, a task
    being two progress reports around a short computation; each task it finished is one line in
    `done_path`. It ends once `stop_path` exists and nothing is left to do."""
    from taskfarm_worker import TaskFarmWorker

    workers: dict[str, TaskFarmWorker] = {}
    finished: set[str] = set()
    while True:
        busy = False
        for run in Path(runs_path).read_text().split():
            if run in finished:
                continue
            if run not in workers:
                workers[run] = TaskFarmWorker(user, password, run, url_base=url)
            worker = workers[run]
            for task in worker.tasks:
                busy = True
                worker.update(50)
                time.sleep(0.1)  # the computation
                worker.update(100)
                worker.done()
                fd = os.open(done_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    os.write(fd, f"{run} {task}\n".encode())
                finally:
                    os.close(fd)
            if worker.info("numDone") == worker.numTasks:
                finished.add(run)
        if not busy:
            if Path(stop_path).exists():
                return
            time.sleep(0.5)


class Platform:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.pg_name, self.pg_port, self.redis_port = f"faults{secrets.token_hex(3)}", free_port(), free_port()
        self.port = free_port()
        self.env = {
            **os.environ,
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:{self.pg_port}/postgres",
            "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "COORDINATOR_VAR_DIR": str(work / "var"),
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
            "DJANGO_DEBUG": "0",
            "JOBS_EXTRA_MODULES": "bench.jobs_tasks",
            "JOBS_STALE_SECONDS": "5",
            "JOBS_STALL_SECONDS": "10",
            "Q_WORKERS": "2",
            "POOL_JOURNAL_DIR": str(work / "journal"),
            "POOL_JOURNAL_BEHIND_SECONDS": str(JOURNAL_BEHIND_SECONDS),
            "HEALTH_LOW_DISK_BYTES": str(LOW_DISK_BYTES),
            "FARM_LEASE_SECONDS": str(FARM_LEASE_SECONDS),
            "CREDENTIAL_RATE_PER_ADDRESS": "100000/min",
            "CREDENTIAL_RATE_PER_ACCOUNT": "100000/min",
            "ANONYMOUS_JOB_RATE": "100000/min",
            "PYTHONPATH": str(ROOT),
        }
        self.serve: subprocess.Popen[bytes] | None = None
        self.redis: subprocess.Popen[bytes] | None = None
        self.journal = work / "journal"
        self.journal_mounted = False

    def start_services(self) -> None:
        self.journal.mkdir()
        if os.geteuid() == 0:  # the day log on a small disk of its own, to fill it
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={JOURNAL_TMPFS}", "tmpfs", str(self.journal)], check=True
            )
            self.journal_mounted = True
        subprocess.run(
            ["pg_createcluster", PG_VERSION, self.pg_name, "-p", str(self.pg_port), "--start", "--", "--auth=trust"],
            check=True,
            capture_output=True,
        )
        self.start_redis()
        self.manage("migrate", "-v0")
        self.manage("createuser", USER, "--password", PASSWORD, "--role", "admin")

    def start_redis(self) -> None:
        self.redis = subprocess.Popen(
            ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        time.sleep(0.5)

    def stop_redis(self) -> None:
        if self.redis is not None:
            self.redis.terminate()
            self.redis.wait(timeout=10)

    def pg(self, action: str) -> None:
        subprocess.run(["pg_ctlcluster", PG_VERSION, self.pg_name, action, "-m", "fast"], check=True)

    def manage(self, *args: str) -> str:
        done = subprocess.run(
            [PYTHON, "manage.py", *args], cwd=ROOT, env=self.env, check=True, capture_output=True, text=True
        )
        return done.stdout

    def start_serve(self) -> None:
        log = open(self.work / "serve.log", "ab")  # the child writes to it; closed when this process ends
        self.serve = subprocess.Popen(
            [PYTHON, "manage.py", "serve", "--port", str(self.port), "--workers", "2"],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{self.port}/healthz", timeout=2).status_code in (200, 503):
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise RuntimeError("serve did not start")

    def main_of(self, name: str) -> psutil.Process:
        assert self.serve is not None
        for process in psutil.Process(self.serve.pid).children(recursive=True):
            argv = process.cmdline()
            if "coordinator.serving.supervised" in argv and argv[argv.index("--name") + 1] == name:
                return process.children()[0]
        raise LookupError(name)

    def idle_worker(self) -> int:
        """A live worker of the job cluster (after a restart, once the new cluster's are ready)."""
        import re

        deadline = time.monotonic() + 60
        while True:
            log = (self.work / "serve.log").read_text(errors="replace")
            pids = [int(pid) for pid in re.findall(r"ready for work at (\d+)", log) if psutil.pid_exists(int(pid))]
            if pids or time.monotonic() > deadline:
                return pids[-1]
            time.sleep(0.5)

    def teardown(self) -> None:
        if self.serve is not None and self.serve.poll() is None:
            self.serve.send_signal(signal.SIGTERM)
            self.serve.wait(timeout=60)
        self.stop_redis()
        subprocess.run(["pg_dropcluster", "--stop", PG_VERSION, self.pg_name], capture_output=True)
        if self.journal_mounted:
            subprocess.run(["umount", str(self.journal)], check=False)

    def fill_journal_disk(self, base: str) -> str:
        """Fill the day log's disk, watch /healthz, give the space back, and say what it showed and
        how long the writer took to catch up."""
        filler = self.journal / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while True:
                os.write(fd, b"\0" * 65536)
        except OSError:  # ENOSPC: full
            pass
        finally:
            os.close(fd)
        seen: set[str] = set()
        deadline = time.monotonic() + 3 * JOURNAL_BEHIND_SECONDS
        while time.monotonic() < deadline:
            components = health_components(base)
            seen |= {
                f"{name} {state}" for name, state in components.items() if name.startswith("day log") and state != "ok"
            }
            time.sleep(1)
        filler.unlink()
        released = time.monotonic()
        while time.monotonic() < released + 120:
            components = health_components(base)
            if components.get("day log") == "ok" and components.get("day log disk") == "ok":
                break
            time.sleep(0.5)
        caught_up = time.monotonic() - released
        return f"/healthz showed {', '.join(sorted(seen)) or 'nothing'}; writing again {caught_up:.1f} s after space returned"


def main() -> None:
    if sys.argv[1:2] == ["farm-worker"]:
        farm_worker(*sys.argv[2:8])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--settle", type=float, default=SETTLE_SECONDS, help="seconds of load after each fault")
    settle = parser.parse_args().settle
    if not PG_VERSION:
        sys.exit("needs Debian's PostgreSQL cluster tools (pg_createcluster)")
    from coordinator.serving.supervision import STOP_BOUND_SECONDS

    work = Path(tempfile.mkdtemp(prefix="faults-"))
    platform = Platform(work)
    windows: list[Window] = []
    farm: Farm | None = None
    try:
        platform.start_services()
        platform.start_serve()
        base = f"http://127.0.0.1:{platform.port}"
        admin = requests.post(f"{base}/auth/token/", json={"email": USER, "password": PASSWORD}, timeout=10).json()[
            "access"
        ]
        created = dict(
            line.split(": ", 1)
            for line in platform.manage("createdevice", "faults-device").splitlines()
            if ": " in line
        )
        device_token = requests.post(
            f"{base}/pool/token", json={"device_id": int(created["device_id"]), "secret": created["secret"]}, timeout=10
        ).json()["token"]
        load = Load(base=base, marker=work / "ran")
        farm = Farm(url=f"{base}/api/", work=work)
        farm.create_run()
        threads = [
            threading.Thread(target=load.submit_jobs, daemon=True),
            threading.Thread(target=load.send_pool, args=("heartbeat", device_token, {}, load.beats), daemon=True),
            threading.Thread(
                target=load.send_pool,
                args=("task", admin, {"to": f"device:{created['device_id']}", "title": "faults"}, load.tasks),
                daemon=True,
            ),
            threading.Thread(target=load.read_stream, args=(admin,), daemon=True),
        ]
        keepers = [threading.Thread(target=farm.keep_worker, daemon=True) for _ in range(FARM_WORKERS)]
        for thread in [*threads, *keepers]:
            thread.start()
        time.sleep(5)

        def fault(name: str, expected: str, act: Any) -> None:
            assert farm is not None
            window = Window(name, expected, time.time())
            print(f"fault: {name}", flush=True)
            farm.create_run()
            time.sleep(1)  # farm tasks in flight when the fault comes
            window.observed = act() or ""
            time.sleep(settle)
            window.ended = time.time()
            windows.append(window)

        for process in ("web", "front", "asgi", "progress", "jobs"):
            fault(
                f"kill -9 {process}",
                "started again; nothing lost"
                + ("; a farm worker whose POST it was answering stops" if process in ("web", "front") else ""),
                lambda process=process: os.kill(platform.main_of(process).pid, signal.SIGKILL),
            )
        fault(
            "kill -9 idle worker",
            "a job it held runs again within 60 s (outbox sweep)",
            lambda: os.kill(platform.idle_worker(), signal.SIGKILL),
        )
        fault(
            "PostgreSQL restart",
            "503 meanwhile; nothing lost; a farm worker whose POST meets a 503 stops",
            lambda: platform.pg("restart"),
        )

        def redis_restart() -> str:
            platform.stop_redis()
            time.sleep(3)
            platform.start_redis()
            return ""

        fault("Redis restart", "events stored once, streamed", redis_restart)
        if platform.journal_mounted:
            fault(
                "day log disk full",
                "answers unchanged; /healthz shows it; lines whole after",
                lambda: platform.fill_journal_disk(base),
            )

        stopped_in: list[float] = []

        def sigterm() -> str:
            assert platform.serve is not None
            began = time.monotonic()
            platform.serve.send_signal(signal.SIGTERM)
            platform.serve.wait(timeout=120)
            took = time.monotonic() - began
            platform.start_serve()
            stopped_in.append(took)
            return f"serve stopped in {took:.1f} s (bound {STOP_BOUND_SECONDS} s)"

        fault("SIGTERM serve", "stops within its bound; no farm worker stops", sigterm)
        windows[-1].stopped_in = stopped_in[0]
        load.stop.set()
        for thread in threads[:3]:
            thread.join(timeout=30)
        print("waiting for every accepted job and farm task to finish", flush=True)
        os.environ.update(platform.env)  # this process reads the throwaway database too
        report = settle_and_measure(load, farm, windows, platform.journal if platform.journal_mounted else None)
    finally:
        if farm is not None:
            farm.end()
        platform.teardown()
    print(report)
    write_section("Reliability", report)
    shutil.rmtree(work, ignore_errors=True)  # kept (with serve.log) only when the run failed


def settle_and_measure(load: Load, farm: Farm, windows: list[Window], journal: Path | None) -> str:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "coordinator.settings")
    django.setup()
    from django.db.models import Count

    from farm.models import Task as FarmTask
    from jobs.models import Job
    from pool.models import Message
    from progress.models import ProgressEvent

    accepted_ids = [job for _, _, job in load.jobs]
    run_uuids = [run for _, run in farm.runs]

    def farm_done() -> Counter[str]:
        return Counter(
            FarmTask.objects.filter(run__uuid__in=run_uuids, status="done").values_list("run__uuid", flat=True)
        )

    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        done = Job.objects.filter(uuid__in=accepted_ids, status__in=["success", "failure"]).count()
        tasks_done = sum(farm_done().values())
        print(
            f"  {done}/{len(accepted_ids)} jobs final, {tasks_done}/{FARM_TASKS * len(run_uuids)} farm tasks done",
            flush=True,
        )
        if done == len(accepted_ids) and tasks_done == FARM_TASKS * len(run_uuids):
            break
        time.sleep(2)
    jobs = {str(job.uuid): job for job in Job.objects.filter(uuid__in=accepted_ids)}
    runs = Counter(int(line) for line in load.marker.read_text().split()) if load.marker.exists() else Counter()
    stored = Counter(Message.objects.filter(type__in=["heartbeat", "task"]).values_list("body", flat=True))
    farm_tasks_done = farm_done()
    done_path = Path(farm.files[1])
    finished_by = (
        Counter(tuple(line.split()) for line in done_path.read_text().splitlines()) if done_path.exists() else Counter()
    )
    duplicate_events = (
        ProgressEvent.objects.filter(topic__startswith="job:")
        .values("topic", "kind", "text", "state")  # a job run twice after a kill publishes its `new` again
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .count()
    )
    rows = [
        "| fault | expected | observed | accepted | lost | duplicated | 500s | farm worker exits | longest wait |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    totals: Counter[str] = Counter()
    kill_job_wait = stopped_in_seconds = 0.0
    for window in windows:

        def within(items: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
            return [item for item in items if window.started <= item[0] < window.ended]  # noqa: B023

        in_jobs, in_beats, in_tasks = within(load.jobs), within(load.beats), within(load.tasks)
        in_runs = [run for at, run in farm.runs if window.started <= at < window.ended]
        counts = {
            "jobs lost": sum(1 for *_, job in in_jobs if jobs.get(job) is None or jobs[job].status != "success"),
            "requests lost": sum(1 for *_, key in in_beats + in_tasks if stored[key] == 0),
            "farm lost": sum(FARM_TASKS - farm_tasks_done[run] for run in in_runs),
            "jobs twice": sum(1 for *_, job in in_jobs if job in jobs and runs[jobs[job].pk] > 1),
            "heartbeats twice": sum(1 for *_, key in in_beats if stored[key] > 1),
            "device tasks twice": sum(1 for *_, key in in_tasks if stored[key] > 1),
            "farm twice": sum(1 for (run, _), count in finished_by.items() if run in in_runs and count > 1),
        }
        totals.update(counts)
        lost = counts["jobs lost"] + counts["requests lost"] + counts["farm lost"]
        duplicated = counts["jobs twice"] + counts["heartbeats twice"] + counts["device tasks twice"]
        duplicated += counts["farm twice"]
        exits = [why for at, why in farm.exits if window.started <= at < window.ended]
        waits = [at - first for first, at, _ in in_jobs + in_beats + in_tasks]
        waits += [
            finished.timestamp() - at
            for _, at, job in in_jobs
            if job in jobs and (finished := jobs[job].finished_at) is not None
        ]
        job_waits = [
            finished.timestamp() - at
            for _, at, job in in_jobs
            if job in jobs and (finished := jobs[job].finished_at) is not None
        ]
        if window.fault.startswith("kill"):
            kill_job_wait = max([kill_job_wait, *job_waits])
        if window.fault.startswith("PostgreSQL"):
            totals["500s in the database outage"] = sum(
                1 for at in load.server_errors if window.started <= at < window.ended
            )
        if window.stopped_in is not None:
            stopped_in_seconds = window.stopped_in
        rows.append(
            f"| {window.fault} | {window.expected} | {'LOST' if lost else window.observed or 'as expected'} | "
            f"{len(in_jobs)} jobs, {len(in_beats)} heartbeats, {len(in_tasks)} device tasks, "
            f"{FARM_TASKS * len(in_runs)} farm tasks | {lost} | {duplicated} | "
            f"{sum(1 for at in load.server_errors if window.started <= at < window.ended)} | "
            f"{len(exits)}{' (' + '; '.join(sorted(set(exits))) + ')' if exits else ''} | "
            f"{max(waits, default=0):.1f} s |"
        )
    streamed_twice = sum(1 for count in load.streamed.values() if count > 1)
    summary = (
        f"Across the run: {len(load.jobs)} jobs, {len(load.beats)} heartbeats, {len(load.tasks)} device tasks and "
        f"{FARM_TASKS * len(run_uuids)} farm tasks accepted; {sum(farm_tasks_done.values())} farm tasks done, "
        f"{sum(1 for count in finished_by.values() if count > 1)} finished twice; progress events stored twice: "
        f"{duplicate_events}; events streamed twice to the reader: {streamed_twice}; answers of 500 (not 503): "
        f"{len(load.server_errors)}."
    )
    whole_percent: float | None = None
    if journal is not None:
        # A file not ending in a newline ends in a partial line: it counts, and is not whole.
        lines = [
            line
            for path in sorted(journal.glob("*.jsonl"))
            for line in path.read_bytes().removesuffix(b"\n").split(b"\n")
        ]
        whole = []
        for line in lines:
            try:
                whole.append(json.loads(line)["id"])
            except (ValueError, KeyError):
                continue
        messages = set(Message.objects.values_list("msg_id", flat=True))
        whole_percent = 100 * len(whole) / max(1, len(lines)) if set(whole) == messages else 0.0
        summary += (
            f" Day log: {len(lines)} lines, {len(whole)} whole ({100 * len(whole) / max(1, len(lines)):.0f}%), "
            f"{len(whole) - len(set(whole))} written twice, {len(messages - set(whole))} of {len(messages)} "
            "messages missing."
        )
    from coordinator.serving.supervision import STOP_BOUND_SECONDS

    def met(ok: bool) -> str:
        return "met" if ok else "**NOT MET**"

    targets = [
        f"- 0 accepted jobs lost and 0 run twice: {totals['jobs lost']} lost, {totals['jobs twice']} run twice "
        f"({met(totals['jobs lost'] == totals['jobs twice'] == 0)});",
        f"- at most 60 s from any single kill until jobs run again: the longest job (acceptance to end) in a "
        f"kill's window took {kill_job_wait:.1f} s ({met(kill_job_wait <= 60)});",
        f"- `serve` stops within its bound: {stopped_in_seconds:.1f} s of {STOP_BOUND_SECONDS} s "
        f"({met(0 < stopped_in_seconds <= STOP_BOUND_SECONDS)});",
        f"- 0 answers of 500 during a database outage: {totals['500s in the database outage']} "
        f"({met(totals['500s in the database outage'] == 0)});",
        f"- 0 duplicate progress events: {duplicate_events} stored twice, {streamed_twice} streamed twice "
        f"({met(duplicate_events == streamed_twice == 0)});",
        "- day log lines 100% whole after the disk was full: "
        + (
            f"{whole_percent:.0f}% ({met(whole_percent == 100)});"
            if whole_percent is not None
            else "not run (needs root);"
        ),
        f"- 0 duplicate device tasks from retried requests with an Idempotency-Key: {totals['device tasks twice']} "
        f"(and {totals['heartbeats twice']} heartbeats) ({met(totals['device tasks twice'] == totals['heartbeats twice'] == 0)});",
        f"- every farm task done exactly once: {totals['farm lost']} not done, {totals['farm twice']} finished twice "
        f"({met(totals['farm lost'] == totals['farm twice'] == 0)}).",
    ]
    return "\n".join(
        [
            "## Reliability under faults",
            "",
            machine_line(),
            "",
            "`python -m bench.faults`: `serve` on a throwaway PostgreSQL cluster and redis-server, its day log on a "
            f"{JOURNAL_TMPFS} tmpfs, under a job submitter, a device client and a master client (Idempotency-Key), "
            f"{FARM_WORKERS} `taskfarm-worker` processes (a run of {FARM_TASKS} tasks per fault, lease "
            f"{FARM_LEASE_SECONDS} s) and an SSE reader, one fault after another.",
            "",
            *rows,
            "",
            summary,
            "",
            "Targets (issue 16):",
            "",
            *targets,
        ]
    )


if __name__ == "__main__":
    main()
