"""Fault suite: `manage.py serve` under real load while faults are injected, one table at the end.

    python -m bench.faults

Starts a throwaway PostgreSQL cluster on a port of its own (`pg_createcluster`) and a throwaway
`redis-server`, never the shared ones, and `serve` against them. Load runs the whole time: a job
submitter (pytasks `POST /task`, retrying a refusal or a dropped connection), a device client
(`POST /pool/heartbeat` with an `Idempotency-Key`, retrying with the same key) and an SSE reader.
Faults, one after another, each followed by load for a while: `kill -9` of granian's main
process, the front door, daphne, the progress listener, the job cluster's sentinel and an idle
worker; a PostgreSQL restart; a Redis restart; SIGTERM of `serve` (then started again).

Per fault: accepted (jobs and heartbeats the API accepted in its window), lost (accepted jobs not
`success` at the end, heartbeats missing), duplicated (a job run twice, a heartbeat stored twice),
and the longest wait (from a request's first attempt until it was accepted, or from a job's
acceptance until it finished). Writes the table into docs/benchmarks.md ("Reliability").
"""

from __future__ import annotations

import os
import secrets
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
SETTLE_SECONDS = 15.0  # load after each fault
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


@dataclass
class Load:
    base: str
    marker: Path
    token: str
    stop: threading.Event = field(default_factory=threading.Event)
    jobs: list[tuple[float, float, str]] = field(default_factory=list)  # first attempt, accepted, job uuid
    beats: list[tuple[float, float, str]] = field(default_factory=list)  # first attempt, accepted, key
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

    def send_heartbeats(self) -> None:
        while not self.stop.is_set():
            key, first = str(uuid.uuid4()), time.time()
            while not self.stop.is_set():
                try:
                    answer = requests.post(
                        f"{self.base}/pool/heartbeat",
                        json={"body": key},
                        headers={"Authorization": f"Bearer {self.token}", "Idempotency-Key": key},
                        timeout=10,
                    )
                    self.note(answer.status_code)
                    if answer.status_code == 201:
                        self.beats.append((first, time.time(), key))
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
            "CREDENTIAL_RATE_PER_ADDRESS": "100000/min",
            "CREDENTIAL_RATE_PER_ACCOUNT": "100000/min",
            "ANONYMOUS_JOB_RATE": "100000/min",
            "PYTHONPATH": str(ROOT),
        }
        self.serve: subprocess.Popen[bytes] | None = None
        self.redis: subprocess.Popen[bytes] | None = None

    def start_services(self) -> None:
        subprocess.run(
            ["pg_createcluster", PG_VERSION, self.pg_name, "-p", str(self.pg_port), "--start", "--", "--auth=trust"],
            check=True,
            capture_output=True,
        )
        self.start_redis()
        self.manage("migrate", "-v0")
        self.manage("createuser", "ops@example.com", "--password", "a-long-secret-1", "--role", "admin")

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
        log = (self.work / "serve.log").read_text(errors="replace")
        import re

        pids = [int(pid) for pid in re.findall(r"ready for work at (\d+)", log) if psutil.pid_exists(int(pid))]
        return pids[-1]

    def teardown(self) -> None:
        if self.serve is not None and self.serve.poll() is None:
            self.serve.send_signal(signal.SIGTERM)
            self.serve.wait(timeout=60)
        self.stop_redis()
        subprocess.run(["pg_dropcluster", "--stop", PG_VERSION, self.pg_name], capture_output=True)


def main() -> None:
    if not PG_VERSION:
        sys.exit("needs Debian's PostgreSQL cluster tools (pg_createcluster)")
    work = Path(tempfile.mkdtemp(prefix="faults-"))
    platform = Platform(work)
    windows: list[Window] = []
    try:
        platform.start_services()
        platform.start_serve()
        base = f"http://127.0.0.1:{platform.port}"
        admin = requests.post(
            f"{base}/auth/token/", json={"email": "ops@example.com", "password": "a-long-secret-1"}, timeout=10
        ).json()["access"]
        created = dict(
            line.split(": ", 1)
            for line in platform.manage("createdevice", "faults-device").splitlines()
            if ": " in line
        )
        device_token = requests.post(
            f"{base}/pool/token", json={"device_id": int(created["device_id"]), "secret": created["secret"]}, timeout=10
        ).json()["token"]
        load = Load(base=base, marker=work / "ran", token=device_token)
        threads = [
            threading.Thread(target=load.submit_jobs, daemon=True),
            threading.Thread(target=load.send_heartbeats, daemon=True),
            threading.Thread(target=load.read_stream, args=(admin,), daemon=True),
        ]
        for thread in threads:
            thread.start()
        time.sleep(5)

        def fault(name: str, expected: str, act: Any) -> None:
            window = Window(name, expected, time.time())
            print(f"fault: {name}", flush=True)
            window.observed = act() or ""
            time.sleep(SETTLE_SECONDS)
            window.ended = time.time()
            windows.append(window)

        for process in ("web", "front", "asgi", "progress", "jobs"):
            fault(
                f"kill -9 {process}",
                "started again; nothing lost",
                lambda process=process: os.kill(platform.main_of(process).pid, signal.SIGKILL),
            )
        fault(
            "kill -9 idle worker",
            "a job it held runs again within 60 s (outbox sweep)",
            lambda: os.kill(platform.idle_worker(), signal.SIGKILL),
        )
        fault("PostgreSQL restart", "503 meanwhile; nothing lost", lambda: platform.pg("restart"))

        def redis_restart() -> str:
            platform.stop_redis()
            time.sleep(3)
            platform.start_redis()
            return ""

        fault("Redis restart", "events stored once, streamed", redis_restart)

        def sigterm() -> str:
            assert platform.serve is not None
            began = time.monotonic()
            platform.serve.send_signal(signal.SIGTERM)
            platform.serve.wait(timeout=120)
            took = time.monotonic() - began
            platform.start_serve()
            return f"serve stopped in {took:.1f} s (bound 25 s)"

        fault("SIGTERM serve", "stops within its bound", sigterm)
        load.stop.set()
        for thread in threads[:2]:
            thread.join(timeout=30)
        print("waiting for every accepted job to finish", flush=True)
        os.environ.update(platform.env)  # this process reads the throwaway database too
        report = settle_and_measure(load, windows)
    finally:
        platform.teardown()
    print(report)
    write_section("Reliability", report)


def settle_and_measure(load: Load, windows: list[Window]) -> str:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "coordinator.settings")
    django.setup()
    from django.db.models import Count

    from jobs.models import Job
    from pool.models import Message
    from progress.models import ProgressEvent

    accepted_ids = [job for _, _, job in load.jobs]
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        done = Job.objects.filter(uuid__in=accepted_ids, status__in=["success", "failure"]).count()
        print(f"  {done}/{len(accepted_ids)} jobs final", flush=True)
        if done == len(accepted_ids):
            break
        time.sleep(2)
    jobs = {str(job.uuid): job for job in Job.objects.filter(uuid__in=accepted_ids)}
    runs = Counter(int(line) for line in load.marker.read_text().split()) if load.marker.exists() else Counter()
    stored = Counter(Message.objects.filter(type="heartbeat").values_list("body", flat=True))
    duplicate_events = (
        ProgressEvent.objects.filter(topic__startswith="job:")
        .values("topic", "kind", "text", "state")  # a job run twice after a kill publishes its `new` again
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .count()
    )
    rows = [
        "| fault | expected | observed | accepted | lost | duplicated | 500s | longest wait |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for window in windows:
        in_jobs = [(first, at, job) for first, at, job in load.jobs if window.started <= first < window.ended]
        in_beats = [(first, at, key) for first, at, key in load.beats if window.started <= first < window.ended]
        lost = sum(1 for *_, job in in_jobs if jobs.get(job) is None or jobs[job].status != "success")
        lost += sum(1 for *_, key in in_beats if stored[key] == 0)
        duplicated = sum(1 for *_, job in in_jobs if job in jobs and runs[jobs[job].pk] > 1)
        duplicated += sum(1 for *_, key in in_beats if stored[key] > 1)
        waits = [at - first for first, at, _ in in_jobs + in_beats]
        waits += [
            (jobs[job].finished_at.timestamp() - at)
            for _, at, job in in_jobs
            if job in jobs and jobs[job].finished_at is not None
        ]
        rows.append(
            f"| {window.fault} | {window.expected} | {'LOST' if lost else window.observed or 'as expected'} | "
            f"{len(in_jobs)} jobs, {len(in_beats)} heartbeats | {lost} | {duplicated} | "
            f"{sum(1 for at in load.server_errors if window.started <= at < window.ended)} | "
            f"{max(waits, default=0):.1f} s |"
        )
    streamed_twice = sum(1 for count in load.streamed.values() if count > 1)
    return "\n".join(
        [
            "## Reliability under faults",
            "",
            machine_line(),
            "",
            "`python -m bench.faults`: `serve` on a throwaway PostgreSQL cluster and redis-server, under a job "
            "submitter, a device client (Idempotency-Key) and an SSE reader, one fault after another.",
            "",
            *rows,
            "",
            f"Across the run: {len(load.jobs)} jobs and {len(load.beats)} heartbeats accepted; progress events "
            f"stored twice: {duplicate_events}; events streamed twice to the reader: {streamed_twice}; answers of 500 "
            f"(not 503): {len(load.server_errors)}.",
        ]
    )


if __name__ == "__main__":
    main()
