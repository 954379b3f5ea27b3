"""One benchmark client process for `bench.farm` (run with the project's Python).

Modes (argv[1]):
  worker URL USER PW RUN GO   the real `taskfarm_worker.TaskFarmWorker` loop: claim, update(100), done()
  floor  URL USER PW N GO     the same 4 requests per task against a trivial authenticated endpoint
  batch  URL USER PW RUN GO K claim K tasks and complete them, one request each, until none is left

Each process prints `ready` once set up, waits until the file GO exists, works, then prints one
JSON line: {"tasks": [...], "count": n, "errors": [...], "start": t0, "end": t1, "cpu": seconds,
"http": {"4xx": n, "5xx": n, "lost": n}}.

"http" counts every answer of 400 or more the server sent this process, the ones `requests` retried
by itself (`taskfarm_worker` retries a 500 on GET and PUT up to ten times, unseen by its caller)
included, and "lost" the attempts that got no answer (a connection reset or a read error). The
servers measured thus run as deployed, without an access log kept only to count errors. A client
that fails or is stopped (SIGTERM) still prints its line, with what it saw.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import sys
import time
import uuid
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from requests.auth import HTTPBasicAuth
from urllib3.util.retry import Retry


def wait_for(go: str) -> float:
    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.005)
    global _cpu_at_start
    _cpu_at_start = cpu_seconds()
    return time.time()


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


_cpu_at_start = 0.0
_http = {"4xx": 0, "5xx": 0, "lost": 0}


def _count(status: int | None) -> None:
    if status is None:
        _http["lost"] += 1
    elif status >= 500:
        _http["5xx"] += 1
    elif status >= 400:
        _http["4xx"] += 1


# Every attempt urllib3 retries (or gives up on) passes through `Retry.increment`, with its response
# or its error; every answer handed to the caller through `HTTPAdapter.build_response`. Each attempt
# is thus counted once, also when the retries run out and urllib3 raises instead of answering
# (`raise_on_status`, True for taskfarm_worker and here).
_increment = Retry.increment
_build_response = HTTPAdapter.build_response


def _counting_increment(
    self: Retry,
    method: Any = None,
    url: Any = None,
    response: Any = None,
    error: Any = None,
    _pool: Any = None,
    _stacktrace: Any = None,
) -> Retry:
    _count(response.status if response is not None else None)
    return _increment(self, method, url, response, error, _pool, _stacktrace)


def _counting_build_response(self: HTTPAdapter, req: Any, resp: Any) -> requests.Response:
    _count(resp.status)
    return _build_response(self, req, resp)


Retry.increment = _counting_increment  # type: ignore[method-assign]
HTTPAdapter.build_response = _counting_build_response  # type: ignore[method-assign]


def session_like_client(url: str) -> requests.Session:
    """A session configured exactly as taskfarm_worker configures its own."""
    session = requests.Session()
    retry = Retry(total=10, read=10, connect=10, backoff_factor=0.3, status_forcelist=(500, 502, 503, 504))
    session.mount(url, HTTPAdapter(max_retries=retry))
    return session


def token(session: requests.Session, url: str, user: str, password: str) -> str:
    response = session.get(url + "token", auth=HTTPBasicAuth(user, password))
    response.raise_for_status()
    return str(response.json()["token"])


def run_worker(url: str, user: str, password: str, run: str, go: str) -> dict[str, Any]:
    from taskfarm_worker import TaskFarmWorker

    worker = TaskFarmWorker(user, password, run, url_base=url)
    start = wait_for(go)
    seen: list[int] = []
    errors: list[str] = []
    try:
        for task in worker.tasks:
            seen.append(task)
            worker.update(100)
            worker.done()
    except Exception as exc:  # report what the client saw, as a user would
        errors.append(f"{type(exc).__name__}: {str(exc)[:300]}")
    return {"tasks": seen, "count": len(seen), "errors": errors, "start": start, "end": time.time()}


def run_floor(url: str, user: str, password: str, n: int, go: str) -> dict[str, Any]:
    session = session_like_client(url)
    auth = HTTPBasicAuth(token(session, url, user, password), "")
    start = wait_for(go)
    errors: list[str] = []
    for _ in range(n):
        for _ in range(4):
            response = session.get(url + "token", auth=auth)
            if response.status_code != 200:
                errors.append(f"HTTP {response.status_code}")
    return {"tasks": [], "count": n, "errors": errors, "start": start, "end": time.time()}


def run_batch(url: str, user: str, password: str, run: str, go: str, k: int) -> dict[str, Any]:
    session = session_like_client(url)
    auth = HTTPBasicAuth(token(session, url, user, password), "")
    worker = uuid.uuid1().hex
    response = session.post(
        url + "worker", json={"uuid": worker, "hostname": socket.gethostname(), "pid": os.getpid()}, auth=auth
    )
    response.raise_for_status()
    start = wait_for(go)
    seen: list[int] = []
    errors: list[str] = []
    while True:
        claimed = session.post(f"{url}runs/{run}/tasks/claim", json={"worker_uuid": worker, "count": k}, auth=auth)
        if claimed.status_code != 200:
            errors.append(f"claim HTTP {claimed.status_code}")
            break
        numbers = [t["task"] for t in claimed.json()["tasks"]]
        if not numbers:
            break
        seen += numbers
        done = session.post(f"{url}runs/{run}/tasks/done", json={"worker_uuid": worker, "tasks": numbers}, auth=auth)
        if done.status_code != 200 or done.json()["refused"]:
            errors.append(f"done HTTP {done.status_code}")
    return {"tasks": seen, "count": len(seen), "errors": errors, "start": start, "end": time.time()}


class Stopped(Exception):
    """SIGTERM: the benchmark ran out of time."""


def _stop(signum: int, frame: Any) -> None:
    raise Stopped()


def main() -> None:
    mode, url, user, password, target, go = sys.argv[1:7]
    signal.signal(signal.SIGTERM, _stop)
    result: dict[str, Any] = {"tasks": [], "count": 0, "errors": [], "start": time.time(), "end": time.time()}
    try:
        if mode == "worker":
            result = run_worker(url, user, password, target, go)
        elif mode == "floor":
            result = run_floor(url, user, password, int(target), go)
        else:
            result = run_batch(url, user, password, target, go, int(sys.argv[7]))
    except BaseException as exc:  # report what the client saw, as a user would
        result["errors"].append(f"{type(exc).__name__}: {str(exc)[:300]}")
        result["end"] = time.time()
    result["cpu"] = cpu_seconds() - _cpu_at_start  # this process's CPU while it worked
    result["http"] = _http
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
