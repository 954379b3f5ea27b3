"""`manage.py serve` really starts the platform as one supervised group."""

from __future__ import annotations

import base64
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from tests.live import ROOT, free_port, server_env, wait_for_http

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def start_serve(tmp_path: Path, port: int, **extra_env: str) -> subprocess.Popen[bytes]:
    env = server_env(**{"COORDINATOR_VAR_DIR": str(tmp_path), "Q_WORKERS": "1", **extra_env})
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 - the child keeps writing to it
    return subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--port", str(port), "--workers", "1"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_for_output(tmp_path: Path, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in (tmp_path / "serve.log").read_text(errors="replace"):
        assert time.monotonic() < deadline, f"{text!r} never appeared in the serve output"
        time.sleep(0.2)


def stop_and_read(proc: subprocess.Popen[bytes], tmp_path: Path, sig: int | None = signal.SIGTERM) -> str:
    if sig is not None:
        proc.send_signal(sig)
    proc.wait(timeout=60)
    return (tmp_path / "serve.log").read_text(errors="replace")


def websocket_open_and_close(port: int, path: str = "/ws/progress/") -> bytes:
    """A WebSocket handshake through the front door, then the client closes: what the server answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        key = base64.b64encode(os.urandom(16)).decode()
        conn.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"Origin: http://127.0.0.1:{port}\r\n\r\n"
            ).encode()
        )
        answer = conn.recv(4096)
        conn.sendall(bytes([0x88, 0x82]) + os.urandom(4) + b"\x03\xe8")  # a masked close frame, code 1000
        time.sleep(0.3)
    return answer


def descendants(proc: subprocess.Popen[bytes]) -> list[psutil.Process]:
    return psutil.Process(proc.pid).children(recursive=True)


def health_components(base: str) -> dict[str, str]:
    """/healthz's components, whether it answers 200 or 503: the job cluster may not have swept yet,
    and a cluster of an earlier run may have left its last sweep in the shared cache, so a test
    asserts only the components it is about."""
    body = requests.get(f"{base}/healthz", timeout=5).json()
    return dict(body.get("components") or body["extra"]["components"])


def test_serve_answers_on_one_address_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    proc = start_serve(tmp_path, port)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_http(f"{base}/healthz", timeout=60, proc=proc)
        wait_for_output(tmp_path, "Q Cluster")  # the job cluster is up too
        wait_for_output(tmp_path, "running.")
        deadline = time.monotonic() + 30
        while requests.get(f"{base}/healthz", timeout=5).status_code == 502 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert health_components(base)["database"] == "ok"
        login = requests.get(f"{base}/admin/login/", timeout=5)
        assert login.status_code == 200 and "Coordinator" in login.text
        # Plain HTTP is served by granian; WebSocket paths by daphne.
        plain = requests.get(f"{base}/healthz", timeout=5)
        assert plain.headers.get("Server") == "granian"
        ws = requests.get(f"{base}/ws/nothing-here/", timeout=5)
        assert "granian" not in ws.headers.get("Server", "")
        # Behind the front door granian closes every connection after one response, so a client
        # reusing its connections (a requests.Session) still gets each request routed by its path.
        assert plain.headers.get("Connection") == "close"
        # (daphne does keep its connections alive: plain requests sent after a /ws/ answer on the same
        # connection are answered by daphne, correctly but slower; see docs/serving.md.)
        with requests.Session() as session:
            assert session.get(f"{base}/healthz", timeout=5).headers.get("Server") == "granian"
            assert "granian" not in session.get(f"{base}/ws/nothing-here/", timeout=5).headers.get("Server", "")
        # `/` is the landing page, not a 404.
        assert "What runs here" in requests.get(f"{base}/", timeout=5).text
        # A WebSocket that opens and closes normally leaves no error behind (checked in the log below).
        assert websocket_open_and_close(port).startswith(b"HTTP/1.1 101")
        # A JWT passed as ?token= (EventSource cannot send headers) never reaches the access log.
        refused = requests.get(f"{base}/progress/events?once=1&token=eyJhbGciOi.not-a-real-token-4711", timeout=10)
        assert refused.status_code == 401
        # A second `serve` of the same checkout finds this one answering and refuses, leaving it alone.
        second = subprocess.run(
            [sys.executable, "manage.py", "serve", "--port", str(free_port()), "--workers", "1"],
            cwd=ROOT,
            env=server_env(COORDINATOR_VAR_DIR=str(tmp_path)),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode != 0 and "already running" in second.stderr, second.stderr[-2000:]
        components = health_components(base)
        assert components["database"] == "ok" and components["progress listener"] == "ok", components
        # Sockets and files the platform creates are the service user's alone (no group or other bits).
        created = [path for path in tmp_path.rglob("*") if not path.is_symlink() and path.name != "serve.log"]
        assert (tmp_path / "run" / "asgi.sock") in created
        exposed = [f"{path} {path.stat().st_mode & 0o777:o}" for path in created if path.stat().st_mode & 0o077]
        assert exposed == [], exposed
        children = descendants(proc)
        names = " ".join(" ".join(child.cmdline()) for child in children if child.is_running())
        assert "granian" in names and "daphne" in names and "qcluster" in names
    finally:
        output = stop_and_read(proc, tmp_path)
    # What the operator needs on start: where the admin, the docs and the Live page are, and the
    # absolute path scripts report progress to.
    for pattern in (
        rf"admin: +{base}/admin/\n",
        rf"API docs: +{base}/docs/\n",
        rf"live progress: +{base}/admin/progress/\S+/live/\n",
        rf"progress socket: +{re.escape(str((tmp_path / 'run' / 'progress.sock').resolve()))}\n",
    ):
        assert re.search(pattern, output), (pattern, output[:3000])
    assert "Task was destroyed" not in output, output[-3000:]
    assert "not-a-real-token-4711" not in output and "token=[redacted]" in output, output[-3000:]
    assert "None:None" not in output and "] None " not in output, output[-3000:]  # the client is named
    assert "WSCONNECT" in output or "WSDISCONNECT" in output or "/ws/progress/" in output, output[-3000:]
    assert proc.returncode == 0, output[-3000:]
    assert "SIGKILL" not in output, output[-3000:]  # every process stopped by itself, cleanly
    for name in ("web", "asgi", "front", "jobs", "progress"):  # each process's output, under its name
        assert re.search(rf"^{name} *\| ", output, re.MULTILINE), output[-2000:]
    assert not [child for child in children if child.is_running() and child.status() != psutil.STATUS_ZOMBIE]


def supervised_main(proc: subprocess.Popen[bytes], name: str) -> psutil.Process:
    """The main process of `name` under `serve`: the one child of its supervised wrapper."""
    deadline = time.monotonic() + 60
    while True:
        for candidate in descendants(proc):
            try:
                argv = candidate.cmdline()
                if "coordinator.serving.supervised" in argv and argv[argv.index("--name") + 1] == name:
                    children = candidate.children()
                    if children:
                        return children[0]
            except (psutil.NoSuchProcess, ValueError, IndexError):
                continue
        assert time.monotonic() < deadline, f"no {name} process under serve"
        time.sleep(0.2)


def wait_for_restart(proc: subprocess.Popen[bytes], name: str, old_pid: int) -> psutil.Process:
    deadline = time.monotonic() + 60
    while (new := supervised_main(proc, name)).pid == old_pid:
        assert proc.poll() is None, "serve stopped"
        assert time.monotonic() < deadline, f"{name} was not started again"
        time.sleep(0.2)
    return new


def wait_until(condition: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def wait_for_job(job_id: int, status: str, what: str, timeout: float = 60) -> None:
    from jobs.models import Job

    wait_until(lambda: Job.objects.get(pk=job_id).status == status, what, timeout)


def answers(base: str) -> bool:
    try:
        return requests.get(f"{base}/healthz", timeout=5).status_code in (200, 503)
    except requests.RequestException:
        return False


def test_serve_starts_again_each_process_that_dies_and_shows_it(tmp_path: Path, django_user_model: Any) -> None:
    import tests.jobs.sample_jobs  # noqa: F401 - registers the job the cluster runs
    from jobs.services import job_create

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_serve(tmp_path, port, JOBS_EXTRA_MODULES="tests.jobs.sample_jobs", JOBS_STALE_SECONDS="2")
    user = django_user_model.objects.create_user(email="ops@example.com", password="x" * 12)
    try:
        wait_for_http(f"{base}/healthz", timeout=60, proc=proc)
        wait_for_output(tmp_path, "running.")
        for name in ("web", "jobs", "front", "asgi", "progress"):
            victim = supervised_main(proc, name)
            leftovers = victim.children(recursive=True)  # granian's workers, the cluster's processes
            os.kill(victim.pid, signal.SIGKILL)
            wait_for_restart(proc, name, victim.pid)
            # What the killed process left behind is gone: the new one runs alone.
            _, alive = psutil.wait_procs(leftovers, timeout=15)
            assert not [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE], name
            wait_until(lambda: answers(base), f"no answer after {name} was killed")
            if name == "jobs":
                # Jobs accepted after the cluster's main process was killed run on the new cluster.
                marker = tmp_path / "ran"
                job = job_create(type="tests.record", data={"path": str(marker)}, user=user)
                wait_for_job(job.pk, "success", "the job never ran after the kill")
                assert len(marker.read_text().splitlines()) == 1
        # The new listener listens again (until it does, /healthz names it down: its socket file alone
        # is not taken for a live listener).
        wait_until(lambda: health_components(base).get("progress listener") == "ok", "the listener is not back")
        body = requests.get(f"{base}/healthz", timeout=5).json()
        restarts = body.get("restarts") or body["extra"]["restarts"]
        assert {name: record["restarts"] for name, record in restarts.items()} == {
            "web": 1,
            "jobs": 1,
            "front": 1,
            "asgi": 1,
            "progress": 1,
        }
        # ("while starting": supervisord counts a process as started once it has run START_SECONDS.)
        assert {record["last_exit"] for record in restarts.values()} <= {"died", "died while starting"}, restarts
        assert all(record["last_exit_at"] for record in restarts.values()), restarts
    finally:
        output = stop_and_read(proc, tmp_path)
    assert proc.returncode == 0, output[-3000:]
    assert "exited: web (exit status 137; not expected)" in output, output[-3000:]  # supervisord's log says how


def test_serve_runs_jobs_through_worker_kills_and_a_frozen_cluster(tmp_path: Path, django_user_model: Any) -> None:
    """Killing any single cluster process stops job execution for a bounded time, never for good:
    not an idle worker (which can leave the task queue's read lock held, freezing the cluster),
    not a busy one, not the whole cluster frozen (the watchdog outside it restarts it)."""
    import tests.jobs.sample_jobs  # noqa: F401 - registers the jobs the cluster runs
    from jobs.models import Job
    from jobs.services import job_create

    port = free_port()
    proc = start_serve(
        tmp_path,
        port,
        JOBS_EXTRA_MODULES="tests.jobs.sample_jobs",
        JOBS_STALE_SECONDS="2",
        JOBS_STALL_SECONDS="5",
        Q_WORKERS="2",
    )
    user = django_user_model.objects.create_user(email="ops@example.com", password="x" * 12)
    ran = tmp_path / "ran"

    def job_runs(label: str) -> None:
        job = job_create(type="tests.record", data={"path": str(ran)}, user=user)
        wait_for_job(job.pk, "success", f"no job ran after {label}", 120)

    def worker_pids() -> list[int]:
        log = (tmp_path / "serve.log").read_text(errors="replace")
        return [int(pid) for pid in re.findall(r"ready for work at (\d+)", log) if psutil.pid_exists(int(pid))]

    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", timeout=60, proc=proc)
        wait_for_output(tmp_path, "running.")
        job_runs("the start")
        for kill, victim in enumerate(["idle", "busy", "main", "idle", "busy", "idle", "busy", "main", "idle", "busy"]):
            if victim == "busy":  # a worker mid-job: the job runs again and finishes
                marker = tmp_path / f"slept-{kill}"
                busy = job_create(type="tests.sleep_retry", data={"seconds": 60.0, "marker": str(marker)}, user=user)
                wait_for_job(busy.pk, "started", "the job never started")
                wait_until(marker.exists, "the job never ran")
                worker = Job.objects.get(pk=busy.pk).worker or ""
                os.kill(int(worker.split(":", 1)[0].rsplit("-", 1)[1]), signal.SIGKILL)
                wait_for_job(busy.pk, "success", "the killed job never ended", 120)
                assert Job.objects.get(pk=busy.pk).interruptions == 1
            elif victim == "idle":  # can leave the task queue's read lock held: the cluster freezes
                wait_until(lambda: len(worker_pids()) >= 2, "the cluster's workers never started", 120)
                os.kill(worker_pids()[0], signal.SIGKILL)
            else:  # the cluster's main process: its wrapper kills the rest, supervisord starts it again
                main = supervised_main(proc, "jobs")
                os.kill(main.pid, signal.SIGKILL)
                wait_for_restart(proc, "jobs", main.pid)
            job_runs(f"kill {kill + 1}")
        # The whole cluster frozen (SIGSTOP): nothing inside it can notice; the watchdog does.
        cluster = supervised_main(proc, "jobs")
        for process in [cluster, *cluster.children(recursive=True)]:
            process.suspend()
        job_runs("the freeze")
        body = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json()
        restarts = body.get("restarts") or body["extra"]["restarts"]  # 200, or 503 naming a component
        assert restarts["jobs"]["last_exit"].startswith("was restarted by the watchdog"), restarts
    finally:
        output = stop_and_read(proc, tmp_path)
    assert proc.returncode == 0, output[-3000:]
    # Every job ran exactly once: one line per `tests.record` job (the start, 10 kills, the freeze).
    assert len(ran.read_text().splitlines()) == 12


def test_serve_counts_every_process_in_one_scrape(tmp_path: Path, django_user_model: Any) -> None:
    """/metrics under `serve` adds up what the web workers and the job cluster counted."""
    from prometheus_client.parser import text_string_to_metric_families

    import tests.jobs.sample_jobs  # noqa: F401 - registers the jobs the cluster runs
    from jobs.services import job_create

    token = "t" * 40
    port = free_port()
    proc = start_serve(tmp_path, port, JOBS_EXTRA_MODULES="tests.jobs.sample_jobs", METRICS_TOKEN=token)
    base = f"http://127.0.0.1:{port}"

    def scrape() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        answer = requests.get(f"{base}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert answer.status_code == 200, answer.text[:500]
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(answer.text)
            for sample in family.samples
        }

    try:
        wait_for_http(f"{base}/healthz", timeout=60, proc=proc)
        wait_for_output(tmp_path, "running.")
        assert requests.get(f"{base}/metrics", timeout=5).status_code == 401
        user = django_user_model.objects.create_user(email="ops@example.com", password="x" * 12)
        before = scrape()
        for _ in range(5):
            requests.get(f"{base}/admin/login/", timeout=5)
        job = job_create(type="tests.record", data={"path": str(tmp_path / "ran")}, user=user)
        wait_for_job(job.pk, "success", "the job never ran", 120)
        after = scrape()
    finally:
        output = stop_and_read(proc, tmp_path)
    assert proc.returncode == 0, output[-3000:]
    login = frozenset({"route": "admin:login", "method": "GET", "status": "200"}.items())
    name = "coordinator_http_requests_total"
    assert after[(name, login)] - before.get((name, login), 0.0) == 5
    record = frozenset({"type": "tests.record", "queue": "default"}.items())
    assert after[("coordinator_jobs_succeeded_total", record)] == 1  # counted in the cluster's worker
    assert after[("coordinator_jobs_started_total", record)] == 1
    assert after[("coordinator_jobs_queue_wait_seconds_count", record)] == 1
    assert ("coordinator_jobs_queue_depth", record) not in after  # nothing left waiting


def test_serve_gives_up_on_a_process_that_keeps_dying(tmp_path: Path) -> None:
    from coordinator.serving.supervision import GIVE_UP_DEATHS

    port = free_port()
    proc = start_serve(tmp_path, port)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", timeout=60, proc=proc)
        for _ in range(GIVE_UP_DEATHS):
            victim = supervised_main(proc, "front")
            children = descendants(proc)
            os.kill(victim.pid, signal.SIGKILL)
            if _ < GIVE_UP_DEATHS - 1:
                wait_for_restart(proc, "front", victim.pid)
        output = stop_and_read(proc, tmp_path, sig=None)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, output[-3000:]
    assert f"serve: gave up: front died {GIVE_UP_DEATHS} times within 60 s" in output, output[-3000:]
    _, alive = psutil.wait_procs(children, timeout=15)
    assert not [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_serve_stops_within_its_bound_with_a_frozen_cluster(tmp_path: Path) -> None:
    from coordinator.serving.supervision import STOP_BOUND_SECONDS

    port = free_port()
    proc = start_serve(tmp_path, port)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", timeout=60, proc=proc)
        wait_for_output(tmp_path, "running.")
        cluster = supervised_main(proc, "jobs")
        frozen = [cluster, *cluster.children(recursive=True)]
        for process in frozen:
            process.suspend()  # SIGSTOP: it cannot even see the stop signal
        children = descendants(proc)
        proc.send_signal(signal.SIGTERM)
        # Bounded: `serve` exits by itself (a frozen cluster used to keep it waiting forever).
        proc.wait(timeout=STOP_BOUND_SECONDS + 15)
    finally:
        if proc.poll() is None:
            proc.kill()
    output = (tmp_path / "serve.log").read_text(errors="replace")
    assert proc.returncode == 0, output[-3000:]
    assert "still running" in output and "SIGKILL" in output, output[-3000:]  # the cluster was killed
    _, alive = psutil.wait_procs(children, timeout=15)
    assert not [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_sigterm_with_long_jobs_and_a_farm_worker_mid_run(tmp_path: Path) -> None:
    """SIGTERM while two long jobs run, a real `taskfarm-worker` works through a run and a request's
    body is still arriving: `serve` stops within its bound (the jobs are cut off), the requests in
    flight are answered in full (the drain), the worker waits for the next `serve` on the same port
    instead of crashing, and the next `serve` runs the cut-off jobs to the end: nothing lost, no
    task handed out twice."""
    import tests.jobs.sample_jobs  # noqa: F401 - registers the job the cluster runs
    from coordinator.serving.supervision import STOP_BOUND_SECONDS
    from farm.models import Task
    from jobs.models import Job
    from jobs.services import job_create
    from tests.factories import DEFAULT_PASSWORD, UserFactory

    num_tasks = 40
    env = {"JOBS_EXTRA_MODULES": "tests.jobs.sample_jobs", "JOBS_STALE_SECONDS": "2", "Q_WORKERS": "2"}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    user = UserFactory(email="scientist@example.com")
    proc = start_serve(tmp_path, port, **env)
    worker: subprocess.Popen[str] | None = None
    first = out = ""
    try:
        wait_for_http(f"{base}/healthz", timeout=60, proc=proc)
        wait_for_output(tmp_path, "running.")
        markers = [tmp_path / f"long-{n}" for n in range(2)]
        jobs = [
            job_create(type="tests.sleep_retry", data={"seconds": 120.0, "marker": str(marker)}, user=user)
            for marker in markers
        ]
        for job, marker in zip(jobs, markers, strict=True):
            wait_for_job(job.pk, "started", "a long job never started")
            wait_until(marker.exists, "a long job never ran")
        from taskfarm_worker import TaskFarm

        run = TaskFarm(user.email, DEFAULT_PASSWORD, numTasks=num_tasks, url_base=f"{base}/api/")
        worker = subprocess.Popen(
            [sys.executable, "-m", "tests.farm.race_worker", f"{base}/api/", user.email, DEFAULT_PASSWORD, run.uuid],
            cwd=ROOT,
            env=server_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert worker.stdout is not None
        first = worker.stdout.readline()  # it has its first task: it claims and reports from now on
        body = b'{"email": "nobody@example.com", "password": "not-the-password"}'
        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
            conn.sendall(
                b"POST /auth/token/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body[:10]
            )
            time.sleep(0.5)  # the front door has the head and waits for the body
            proc.send_signal(signal.SIGTERM)
            wait_for_output(tmp_path, "front door draining")
            conn.sendall(body[10:])
            answer = b""
            while chunk := conn.recv(65536):
                answer += chunk
        status_line = answer.split(b"\r\n", 1)[0]
        assert status_line in (b"HTTP/1.1 401 Unauthorized", b"HTTP/1.1 400 Bad Request"), answer[:500]
        assert b'"code"' in answer
        proc.wait(timeout=STOP_BOUND_SECONDS + 15)  # a hang bound: `serve` stops by itself within its own
        first_output = (tmp_path / "serve.log").read_text(errors="replace")
        assert proc.returncode == 0, first_output[-3000:]
        done_while_stopped = Task.objects.filter(status="done").count()
        assert done_while_stopped < num_tasks  # the worker was mid-run when `serve` stopped
        assert worker.poll() is None, worker.communicate()[1][-2000:]  # waiting, not crashed
        cut_off = Job.objects.filter(pk__in=[job.pk for job in jobs]).exclude(status="success").count()
        assert cut_off == 2, first_output[-3000:]

        proc = start_serve(tmp_path, port, **env)  # the next `serve`, where the worker expects it
        out, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err[-2000:]
        for job in jobs:
            wait_for_job(job.pk, "success", "a cut-off job never ran again", 120)
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
        output = stop_and_read(proc, tmp_path)
    assert proc.returncode == 0, output[-3000:]
    handed = [int(line) for line in (first + out).split()]
    assert sorted(handed) == list(range(num_tasks)), "each task handed out once"
    assert Task.objects.filter(status="done").count() == num_tasks
    for job in Job.objects.filter(pk__in=[job.pk for job in jobs]):
        # Cut off by the stop, run again by the next cluster: an interruption, not a failed attempt.
        assert job.interruptions >= 1 and job.result == "attempt 1", (job.interruptions, job.result)


def test_web_keeps_connections_alive_only_behind_a_real_proxy() -> None:
    from coordinator.management.commands.serve import build_process_specs

    def web_argv(behind_proxy: bool) -> list[str]:
        specs = build_process_specs(
            host="127.0.0.1",
            port=8000,
            workers=3,
            behind_proxy=behind_proxy,
            asgi_port=8001,
            qcluster=False,
            access_log=True,
        )
        return next(spec.argv for spec in specs if spec.name == "web")

    embedded, behind = web_argv(False), web_argv(True)
    assert "--no-http1-keep-alive" in embedded and "--uds" in embedded  # the front door routes per connection
    assert "--no-http1-keep-alive" not in behind and behind[behind.index("--port") + 1] == "8000"
    for argv in (embedded, behind):
        assert argv[argv.index("--workers") + 1] == "3" and argv[argv.index("--blocking-threads") + 1] == "1"
        assert "--access-log" in argv and "--interface" in argv and "wsgi" in argv


def test_front_door_waits_for_a_server_that_does_not_accept_yet() -> None:
    """granian binds its socket at once but accepts only once a worker has loaded Django: until
    then the front door retries instead of answering 502 (and gives up at once when stopping)."""
    import asyncio
    import shutil
    import socket
    import tempfile

    from coordinator.serving.proxy import Router

    socket_dir = Path(tempfile.mkdtemp(prefix="door", dir="/tmp"))  # UNIX socket paths are short
    wsgi_path = socket_dir / "wsgi.sock"

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nready")
        await writer.drain()
        writer.close()

    async def request(port: int) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        response = await asyncio.wait_for(reader.read(), timeout=10)
        writer.close()
        return response

    async def scenario() -> tuple[bytes, bytes]:
        # The front door's connection attempts, seen through the loop it runs on: the test goes on
        # once two were refused (it is retrying), not after a delay.
        loop = asyncio.get_running_loop()
        refused_twice = asyncio.Event()
        refusals: list[BaseException] = []
        plain_connect = loop.sock_connect

        async def watched_connect(sock: socket.socket, address: Any) -> None:
            try:
                await plain_connect(sock, address)
            except ConnectionRefusedError as exc:
                refusals.append(exc)
                if len(refusals) >= 2:
                    refused_twice.set()
                raise

        loop.sock_connect = watched_connect  # type: ignore[method-assign]
        router = Router(str(wsgi_path), str(socket_dir / "asgi.sock"), ["/ws/"])
        door = await asyncio.start_server(router.handle, "127.0.0.1", 0)
        port = door.sockets[0].getsockname()[1]
        bound = socket.socket(socket.AF_UNIX)
        bound.bind(str(wsgi_path))  # the socket exists but refuses connections, as granian's does
        pending = asyncio.ensure_future(request(port))
        await asyncio.wait_for(refused_twice.wait(), timeout=30)  # a bound for a hang only
        assert not pending.done()
        upstream = await asyncio.start_unix_server(answer, sock=bound)  # listens from now on
        waited = await pending
        upstream.close()
        await upstream.wait_closed()
        wsgi_path.unlink()
        router.stopping.set()
        refused = await request(port)
        door.close()
        return waited, refused

    try:
        waited, refused = asyncio.run(scenario())
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)
    assert waited.startswith(b"HTTP/1.1 200 OK") and waited.endswith(b"ready")
    assert refused.startswith(b"HTTP/1.1 502 Bad Gateway")


def test_front_door_delivers_an_early_answer_to_a_client_still_sending_its_body() -> None:
    """A server may answer before reading the body (a 401 to an anonymous upload) and close. The
    front door then ends its side and drains the rest of the upload instead of closing at once:
    closing with unread data resets the connection, and the reset could destroy the answer."""
    import asyncio
    import shutil
    import socket
    import tempfile
    import threading

    from coordinator.serving.proxy import Router

    socket_dir = Path(tempfile.mkdtemp(prefix="door", dir="/tmp"))
    wsgi_path = socket_dir / "wsgi.sock"
    body = b"x" * (8 * 1024 * 1024)
    answers: list[bytes] = []

    async def answer_early(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")  # the headers only: the body is never read
        writer.write(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 6\r\nConnection: close\r\n\r\ndenied")
        await writer.drain()
        writer.close()

    def upload(port: int) -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=20) as client:
            client.sendall(f"POST /pool/heartbeat HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode())
            try:
                client.sendall(body)
            except OSError:
                pass  # the door stops reading after its linger: the answer is what matters
            received = b""
            try:
                while chunk := client.recv(65536):
                    received += chunk
            except OSError as exc:
                received += f"<{exc!r}>".encode()
            answers.append(received)

    async def scenario() -> None:
        router = Router(str(wsgi_path), str(socket_dir / "asgi.sock"), ["/ws/"])
        upstream = await asyncio.start_unix_server(answer_early, path=str(wsgi_path))
        door = await asyncio.start_server(router.handle, "127.0.0.1", 0)
        port = door.sockets[0].getsockname()[1]
        for _ in range(5):
            client = threading.Thread(target=upload, args=(port,))
            client.start()
            while client.is_alive():
                await asyncio.sleep(0.01)
        door.close()
        upstream.close()

    try:
        asyncio.run(scenario())
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)
    assert len(answers) == 5
    assert all(a.startswith(b"HTTP/1.1 401 Unauthorized") and a.endswith(b"denied") for a in answers), answers


def _door_scenario(scenario_body: Any, monkeypatch: pytest.MonkeyPatch, **limits: Any) -> Any:
    """Runs `scenario_body(port, requests the server saw, router)` against a front door whose WSGI server
    answers 200 after reading the whole request; returns what the scenario returns."""
    import asyncio
    import shutil
    import tempfile

    from coordinator.serving import proxy

    for name, value in limits.items():
        monkeypatch.setattr(proxy, name, value)
    socket_dir = Path(tempfile.mkdtemp(prefix="door", dir="/tmp"))
    wsgi_path = socket_dir / "wsgi.sock"
    seen: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if head.startswith(b"ADMIT "):  # the door's question before a large or chunked body: go on
            writer.write(b"HTTP/1.1 204 No Content\r\nX-Coordinator-Admission: granted\r\nConnection: close\r\n\r\n")
            await writer.drain()
            writer.close()
            return
        length = int(re.search(rb"Content-Length: (\d+)", head).group(1)) if b"Content-Length" in head else 0
        seen.append(head + await reader.readexactly(length))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    async def scenario() -> Any:
        router = proxy.Router(str(wsgi_path), str(socket_dir / "asgi.sock"), ["/ws/"], max_body=1000)
        upstream = await asyncio.start_unix_server(answer, path=str(wsgi_path))
        door = await asyncio.start_server(router.handle, "127.0.0.1", 0)
        try:
            return await scenario_body(door.sockets[0].getsockname()[1], seen, router)
        finally:
            door.close()
            upstream.close()

    try:
        return asyncio.run(scenario())
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)


async def _exchange(port: int, request: bytes, *, then_wait: bool = True) -> bytes:
    import asyncio

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), timeout=10) if then_wait else b""
    writer.close()
    return answer


def test_front_door_holds_a_stalled_body_itself_and_never_passes_it_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """Headers, then a body that stops arriving: 408 from the door, the WSGI server never sees it."""

    async def body(port: int, seen: list[bytes], router: Any) -> tuple[bytes, int]:
        answer = await _exchange(port, b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 500\r\n\r\n0123456789")
        return answer, len(seen)

    answer, passed_on = _door_scenario(body, monkeypatch, BODY_IDLE_SECONDS=0.3)
    assert answer.startswith(b"HTTP/1.1 408") and b"body_timeout" in answer and passed_on == 0


@pytest.mark.parametrize(
    ("request_head", "status"),
    [
        (b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n", b"413"),  # over max_body
        (b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", b"400"),
        (b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n" + b"x" * 2048, b"413"),
        (b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", b"501"),
        (b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n", b"400"),
        (b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", b"400"),
        # a bare LF ends a line for granian but not for the door: a Content-Length the door never saw
        (b"POST /x HTTP/1.1\nContent-Length: 5000\nHost: a\r\n\r\n", b"400"),
        (b"GET /x HTTP/1.1\r\nHost: a\nX-Forwarded-For: 10.0.0.1\r\n\r\n", b"400"),
        (b"GET /ws/x HTTP/1.1\r\nHost: a\nX-Forwarded-For: 10.0.0.1\r\n\r\n", b"400"),  # daphne's too
    ],
)
def test_front_door_refuses_bodies_it_would_not_buffer(
    monkeypatch: pytest.MonkeyPatch, request_head: bytes, status: bytes
) -> None:
    async def body(port: int, seen: list[bytes], router: Any) -> tuple[bytes, int]:
        return await _exchange(port, request_head), len(seen)

    answer, passed_on = _door_scenario(body, monkeypatch)
    assert answer.startswith(b"HTTP/1.1 " + status) and passed_on == 0, answer


def test_front_door_drops_forwarding_headers_however_the_client_spells_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """granian reads `X_Forwarded_For` as X-Forwarded-For: a client must not add an address that way."""

    async def body(port: int, seen: list[bytes], router: Any) -> tuple[bytes, list[bytes]]:
        request = b"GET /x HTTP/1.1\r\nHost: a\r\nX_Forwarded_For: 10.0.0.1\r\nx_coordinator_admission: POST\r\n\r\n"
        return await _exchange(port, request), seen

    answer, [head] = _door_scenario(body, monkeypatch)
    assert answer.endswith(b"ok")
    assert b"10.0.0.1" not in head and b"admission" not in head.lower()
    assert b"X-Forwarded-For: 127.0.0.1" in head


def test_front_door_buffers_the_body_and_answers_100_continue_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    async def body(port: int, seen: list[bytes], router: Any) -> tuple[bytes, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        await writer.drain()
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        writer.write(b"hello")
        await writer.drain()
        final = await asyncio.wait_for(reader.read(), timeout=10)
        writer.close()
        return interim, final

    interim, final = _door_scenario(body, monkeypatch)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n" and final.endswith(b"ok")


def test_front_door_passes_a_chunked_body_on_with_its_length(monkeypatch: pytest.MonkeyPatch) -> None:
    async def body(port: int, seen: list[bytes], router: Any) -> tuple[bytes, list[bytes]]:
        request = b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n"
        return await _exchange(port, request), seen

    answer, seen = _door_scenario(body, monkeypatch)
    assert answer.endswith(b"ok") and len(seen) == 1
    assert b"Content-Length: 11\r\n" in seen[0] and seen[0].endswith(b"\r\n\r\nhello world")
    assert b"chunked" not in seen[0]


def test_front_door_caps_connections_per_client(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    async def body(port: int, seen: list[bytes], router: Any) -> bytes:
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        while router.per_client["127.0.0.1"] < 2:  # until the door holds both (they send nothing)
            await asyncio.sleep(0.01)
        answer = await _exchange(port, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        for _, writer in idle:
            writer.close()
        return answer

    answer = _door_scenario(body, monkeypatch, MAX_PER_CLIENT=2)
    assert answer.startswith(b"HTTP/1.1 503") and b"too_many_connections" in answer


def test_serve_makes_the_data_that_migrate_created_private(tmp_path: Path) -> None:
    """`./dev up` runs `migrate` under the shell's umask (022) before `serve`: the SQLite file (with
    password hashes and sessions) was readable by every local user. `serve` makes it private."""
    var = tmp_path / "var"
    env = server_env(COORDINATOR_VAR_DIR=str(var))
    env.pop("DATABASE_URL")  # the embedded default: a SQLite file in the data directory

    def shell_umask() -> None:
        os.umask(0o022)

    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=300,
        preexec_fn=shell_umask,
    )
    database = var / "coordinator.sqlite3"
    var.chmod(0o755)  # as a directory made by hand, or by an older version, would be
    assert database.stat().st_mode & 0o044  # what a local user could read until now
    port = free_port()
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 - the child keeps writing to it
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--port", str(port), "--workers", "1", "--no-qcluster"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=shell_umask,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", timeout=90, proc=proc)
        exposed = [
            f"{path} {path.stat().st_mode & 0o777:o}"
            for path in [var, *var.glob("coordinator.sqlite3*")]
            if path.stat().st_mode & 0o077
        ]
        assert exposed == []
    finally:
        stop_and_read(proc, tmp_path)
