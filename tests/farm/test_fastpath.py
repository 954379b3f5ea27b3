"""The WSGI fast path (`farm.api.fastpath`) answers a worker's per-task requests exactly as the full
Django stack does, and hands everything else to Django untouched."""

from __future__ import annotations

import io
import json
import logging
import uuid as uuidlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.core import signals
from django.db import close_old_connections

from coordinator.models import User
from coordinator.wsgi import django_application
from farm import services
from farm.api.fastpath import FarmFastPath
from farm.authentication import farm_token_for
from farm.conf import WORKER_COOKIE
from farm.models import Run, Task, Worker
from tests.factories import DEFAULT_PASSWORD, UserFactory
from tests.farm.conftest import basic

pytestmark = pytest.mark.django_db


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    by_django: bool

    def json(self) -> Any:
        return json.loads(self.body)


class Wsgi:
    """Calls the fast path (in front of the real Django application) with WSGI environs, and tells
    whether Django answered."""

    def __init__(self) -> None:
        self.django_calls = 0
        self.app = FarmFastPath(self._django)

    def _django(self, environ: dict[str, Any], start_response: Any) -> Any:
        self.django_calls += 1
        return django_application(environ, start_response)

    def __call__(self, method: str, path: str, body: Any = None, *, query: str = "", auth: str | None = None,
                 cookie: str | None = None, raw: bytes | None = None, content_type: str = "application/json",
                 **headers: str) -> Answer:
        data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        environ: dict[str, Any] = {
            "REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query, "SCRIPT_NAME": "",
            "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "127.0.0.1:8000", "HTTP_ACCEPT": "*/*",
            "wsgi.input": io.BytesIO(data), "wsgi.errors": io.StringIO(), "wsgi.url_scheme": "http",
            "wsgi.version": (1, 0), "wsgi.multithread": False, "wsgi.multiprocess": True, "wsgi.run_once": False,
        }
        if data or method in ("POST", "PUT"):
            environ["CONTENT_LENGTH"] = str(len(data))
            environ["CONTENT_TYPE"] = content_type
        if auth:
            environ["HTTP_AUTHORIZATION"] = auth
        if cookie:
            environ["HTTP_COOKIE"] = cookie
        for name, value in headers.items():
            environ[f"HTTP_{name.upper()}"] = value
        seen: dict[str, Any] = {}

        def start_response(status: str, response_headers: list[tuple[str, str]], exc_info: Any = None) -> None:
            seen["status"], seen["headers"] = status, response_headers

        before = self.django_calls
        chunks = self.app(environ, start_response)
        try:
            content = b"".join(chunks)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        header_map = {name: value.strip() for name, value in seen["headers"]}
        return Answer(int(seen["status"].split()[0]), header_map, content, self.django_calls > before)


@pytest.fixture
def wsgi() -> Iterator[Wsgi]:
    # As Django's test client does: a test's transaction must survive the request cycle's
    # connection housekeeping.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield Wsgi()
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


@pytest.fixture
def owner(fast_hashers: None) -> User:
    return UserFactory(email="worker@example.com")


@dataclass
class Setup:
    auth: str
    run: str
    worker: str
    known_by_cookie: bool  # False: the token names the worker (it never gets a cookie)

    @property
    def cookie(self) -> str | None:
        return f"{WORKER_COOKIE}={self.worker}" if self.known_by_cookie else None


def new_setup(wsgi: Wsgi, user: User, num_tasks: int = 3, *, shared_token: bool = False) -> Setup:
    """A run and a worker registered as `taskfarm-worker` does (with a token of its own), or as the
    second worker registered with one token (`shared_token`), which is then known by its cookie."""
    auth = basic(farm_token_for(user), "")
    run = wsgi("POST", "/api/run", {"numTasks": num_tasks}, auth=auth).json()["uuid"]
    if shared_token:
        first = {"uuid": uuidlib.uuid1().hex, "hostname": "node-0", "pid": 6}
        assert "Set-Cookie" not in wsgi("POST", "/api/worker", first, auth=auth).headers
    worker = uuidlib.uuid1().hex
    registered = wsgi("POST", "/api/worker", {"uuid": worker, "hostname": "node-1", "pid": 7}, auth=auth)
    assert registered.status == 201
    assert ("Set-Cookie" in registered.headers) is shared_token
    return Setup(auth, run, worker, shared_token)


def worker_loop(wsgi: Wsgi, setup: Setup) -> list[Answer]:
    """What `TaskFarmWorker` sends for its first task, then a claim after the run is done."""
    claim = wsgi("POST", f"/api/runs/{setup.run}/task", {"worker_uuid": setup.worker}, auth=setup.auth)
    number = claim.json()["task"]
    task = f"/api/runs/{setup.run}/tasks/{number}"
    answers = [
        claim,
        wsgi("POST", f"/api/runs/{setup.run}/task", {"worker_uuid": setup.worker}, auth=setup.auth,
             cookie=setup.cookie),  # a second task, with the cookie the first answer set
        wsgi("GET", task, query="info=percentCompleted", auth=setup.auth, cookie=setup.cookie),
        wsgi("GET", task, auth=setup.auth, cookie=setup.cookie),
        wsgi("GET", task, query="info=status", auth=setup.auth, cookie=setup.cookie),
        wsgi("PUT", task, {"percentCompleted": 100}, auth=setup.auth, cookie=setup.cookie),
        wsgi("PUT", task, {"status": "done"}, auth=setup.auth, cookie=setup.cookie),
        wsgi("GET", task, auth=setup.auth, cookie=setup.cookie),
        wsgi("POST", f"/api/runs/{setup.run}/task", {"worker_uuid": setup.worker}, auth=setup.auth,
             cookie=setup.cookie),  # the third and last task
        wsgi("POST", f"/api/runs/{setup.run}/task", {"worker_uuid": setup.worker}, auth=setup.auth,
             cookie=setup.cookie),  # none left: 204
    ]
    return answers


def comparable(answer: Answer) -> tuple[int, dict[str, str], Any]:
    body = answer.json() if answer.body else None
    if isinstance(body, dict):
        body.pop("id", None)  # row ids differ between two runs
    headers = {name: value for name, value in answer.headers.items() if name not in ("Set-Cookie",)}
    return answer.status, headers, body


@pytest.mark.parametrize("shared_token", [False, True], ids=["own token", "shared token"])
def test_the_worker_loop_is_answered_by_the_fast_path_exactly_as_django_answers_it(
    wsgi: Wsgi, owner: User, settings: Any, shared_token: bool
) -> None:
    fast_setup = new_setup(wsgi, owner, shared_token=shared_token)
    fast = worker_loop(wsgi, fast_setup)
    assert [a.by_django for a in fast] == [False] * len(fast)
    settings.FARM_FAST_PATH = False
    full = worker_loop(wsgi, new_setup(wsgi, owner, shared_token=shared_token))
    assert all(a.by_django for a in full)
    assert [comparable(a) for a in fast] == [comparable(a) for a in full]
    assert [a.status for a in fast] == [201, 201, 200, 200, 200, 204, 204, 200, 201, 204]
    assert fast[2].json() == {"percentCompleted": 0.0}
    assert fast[7].json()["status"] == "done" and fast[7].json()["percentCompleted"] == 100.0
    # Both ways alike: a worker its token names never gets a cookie; a shared token's later worker
    # gets one when it does not send it yet.
    assert [("Set-Cookie" in a.headers) for a in fast] == [("Set-Cookie" in a.headers) for a in full]
    assert [("Set-Cookie" in a.headers) for a in fast] == [shared_token] + [False] * (len(fast) - 1)
    if shared_token:
        fast_cookie = fast[0].headers["Set-Cookie"].split("; ")
        full_cookie = full[0].headers["Set-Cookie"].split("; ")
        assert fast_cookie[0] == f"{WORKER_COOKIE}={fast_setup.worker}"
        assert sorted(fast_cookie[1:]) == sorted(full_cookie[1:])


def test_fast_path_writes_what_the_full_path_writes(wsgi: Wsgi, owner: User) -> None:
    setup = new_setup(wsgi, owner, num_tasks=2)
    worker_loop(wsgi, setup)
    run = Run.objects.get(uuid=setup.run)
    tasks = {t.task: t for t in Task.objects.filter(run=run)}
    assert tasks[0].status == Task.Status.DONE and tasks[0].percent_completed == 100
    assert tasks[1].status == Task.Status.COMPUTING
    assert {t.worker.uuid for t in tasks.values()} == {setup.worker}  # type: ignore[union-attr]
    assert Worker.objects.get(uuid=setup.worker).last_seen is not None
    assert Worker.objects.get(uuid=setup.worker).tasks_done == 1


def test_finished_tasks_are_counted_for_the_worker_both_ways(wsgi: Wsgi, owner: User, settings: Any) -> None:
    fast = new_setup(wsgi, owner, num_tasks=2)
    worker_loop(wsgi, fast)
    settings.FARM_FAST_PATH = False
    full = new_setup(wsgi, owner, num_tasks=2)
    worker_loop(wsgi, full)
    assert Worker.objects.get(uuid=fast.worker).tasks_done == Worker.objects.get(uuid=full.worker).tasks_done == 1


def test_a_worker_that_lost_its_task_gets_the_full_paths_409(wsgi: Wsgi, owner: User) -> None:
    setup = new_setup(wsgi, owner)
    number = wsgi("POST", f"/api/runs/{setup.run}/task", {"worker_uuid": setup.worker}, auth=setup.auth).json()["task"]
    other = uuidlib.uuid1().hex  # a worker with a token of its own, as `taskfarm-worker` registers it
    wsgi("POST", "/api/worker", {"uuid": other, "hostname": "node-2", "pid": 8}, auth=basic(farm_token_for(owner), ""))
    Task.objects.filter(run__uuid=setup.run, task=number).update(worker=Worker.objects.get(uuid=other))
    answer = wsgi("PUT", f"/api/runs/{setup.run}/tasks/{number}", {"percentCompleted": 50}, auth=setup.auth,
                  cookie=setup.cookie)
    # The body the fast path had read reached Django: a 409 about the lease, not a 400 about a missing body.
    assert answer.by_django and answer.status == 409 and answer.json()["code"] == "lease_lost"
    assert Task.objects.get(run__uuid=setup.run, task=number).percent_completed == 0


@pytest.mark.parametrize("case", [
    "unknown run", "unknown worker", "password login", "bad token", "no auth", "bearer", "malformed json",
    "nan", "unknown key", "no worker named", "never handed out", "unknown info", "other query", "foreign host",
    "cross origin", "xml only", "form body", "empty body", "head", "out of range", "inactive user", "nul in uuid",
])
def test_every_other_request_is_left_to_django(wsgi: Wsgi, owner: User, case: str, settings: Any) -> None:
    setup = new_setup(wsgi, owner)
    number = wsgi("POST", f"/api/runs/{setup.run}/task", {"worker_uuid": setup.worker}, auth=setup.auth).json()["task"]
    claim_path, task_path = f"/api/runs/{setup.run}/task", f"/api/runs/{setup.run}/tasks/{number}"
    worker_body = {"worker_uuid": setup.worker}
    a, c = setup.auth, setup.cookie
    requests: dict[str, dict[str, Any]] = {
        "unknown run": dict(method="POST", path="/api/runs/" + "0" * 32 + "/task", body=worker_body, auth=a),
        "unknown worker": dict(method="POST", path=claim_path, body={"worker_uuid": "nobody"}, auth=a),
        "password login": dict(method="POST", path=claim_path, body=worker_body,
                               auth=basic(owner.email, DEFAULT_PASSWORD)),
        "bad token": dict(method="POST", path=claim_path, body=worker_body, auth=basic("a.b.c", "")),
        "no auth": dict(method="GET", path=task_path),
        "bearer": dict(method="GET", path=task_path, auth="Bearer x.y.z"),
        "malformed json": dict(method="PUT", path=task_path, raw=b"{not json", auth=a, cookie=c),
        "nan": dict(method="PUT", path=task_path, raw=b'{"percentCompleted": NaN}', auth=a, cookie=c),
        "unknown key": dict(method="PUT", path=task_path, body={"percentCompleted": 5, "x": 1}, auth=a, cookie=c),
        "no worker named": dict(method="PUT", path=task_path, body={"percentCompleted": 5},
                                auth=basic(farm_token_for(owner), "")),  # a token no worker registered with
        "never handed out": dict(method="GET", path=f"/api/runs/{setup.run}/tasks/2", auth=a, cookie=c),
        "unknown info": dict(method="GET", path=task_path, query="info=bogus", auth=a),
        "other query": dict(method="GET", path=task_path, query="info=status&x=1", auth=a),
        "foreign host": dict(method="GET", path=task_path, auth=a, host="evil.example.com"),
        "cross origin": dict(method="GET", path=task_path, auth=a, origin="http://elsewhere.example"),
        "xml only": dict(method="GET", path=task_path, auth=a, accept="application/xml"),
        "form body": dict(method="PUT", path=task_path, raw=b"percentCompleted=5", auth=a, cookie=c,
                          content_type="application/x-www-form-urlencoded"),
        "empty body": dict(method="PUT", path=task_path, raw=b"", auth=a, cookie=c),
        "head": dict(method="HEAD", path=task_path, auth=a),
        "out of range": dict(method="GET", path=f"/api/runs/{setup.run}/tasks/{2**62}", auth=a),
        "inactive user": dict(method="GET", path=task_path, auth=a),
        "nul in uuid": dict(method="POST", path="/api/runs/ab\x00cd/task", body=worker_body, auth=a),
    }
    if case == "inactive user":
        User.objects.filter(pk=owner.pk).update(is_active=False)
        from farm import authentication

        authentication._token_users.clear()
    request = requests[case]
    extra = {k: request.pop(k) for k in ("host", "origin", "accept") if k in request}
    answer = wsgi(request.pop("method"), request.pop("path"), request.pop("body", None), **request, **extra)
    assert answer.by_django, (case, answer)
    # And Django's answer is the one the full stack gives with the fast path off.
    expected = {
        "unknown run": 404, "unknown worker": 404, "password login": 201, "bad token": 401, "no auth": 401,
        "bearer": 401, "malformed json": 400, "nan": 400, "unknown key": 400, "no worker named": 204,
        "never handed out": 200, "unknown info": 404, "other query": 200, "foreign host": 400,
        "cross origin": 200, "xml only": 406, "form body": 415, "empty body": 400, "head": 200,
        "out of range": 404, "inactive user": 401, "nul in uuid": 404,
    }[case]
    assert answer.status == expected, (case, answer)


def test_a_crash_is_the_envelope_500_and_is_logged(wsgi: Wsgi, owner: User, monkeypatch: Any,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    setup = new_setup(wsgi, owner)
    number = wsgi("POST", f"/api/runs/{setup.run}/task", {"worker_uuid": setup.worker}, auth=setup.auth).json()["task"]

    def broken(**kwargs: Any) -> bool:
        raise RuntimeError("database on fire")

    monkeypatch.setattr(services, "task_update_held", broken)
    with caplog.at_level(logging.ERROR, logger="coordinator.api"):
        answer = wsgi("PUT", f"/api/runs/{setup.run}/tasks/{number}", {"percentCompleted": 5}, auth=setup.auth,
                      cookie=setup.cookie)
    assert not answer.by_django and answer.status == 500
    assert answer.json() == {"code": "server_error", "message": "Internal server error. The error has been logged.",
                             "extra": {}}
    assert "database on fire" in caplog.text


def test_the_request_cycle_signals_are_sent(wsgi: Wsgi, owner: User) -> None:
    setup = new_setup(wsgi, owner)
    seen: list[str] = []

    def started(**kwargs: Any) -> None:
        seen.append("started")

    def finished(**kwargs: Any) -> None:
        seen.append("finished")

    signals.request_started.connect(started)
    signals.request_finished.connect(finished)
    try:
        answer = wsgi("POST", f"/api/runs/{setup.run}/task", {"worker_uuid": setup.worker}, auth=setup.auth)
    finally:
        signals.request_started.disconnect(started)
        signals.request_finished.disconnect(finished)
    assert not answer.by_django and seen == ["started", "finished"]


def batch_loop(wsgi: Wsgi, setup: Setup) -> list[Answer]:
    claim, done = f"/api/runs/{setup.run}/tasks/claim", f"/api/runs/{setup.run}/tasks/done"
    a, w = setup.auth, setup.worker
    return [
        wsgi("POST", claim, {"worker_uuid": w, "count": 2}, auth=a),
        wsgi("POST", claim, {"worker_uuid": w, "count": 5}, auth=a, cookie=setup.cookie),
        wsgi("POST", done, {"worker_uuid": w, "tasks": [4, 0, 1, 1, 9]}, auth=a, cookie=setup.cookie),
        wsgi("POST", claim, {"worker_uuid": w, "count": 5}, auth=a, cookie=setup.cookie),
    ]


@pytest.mark.parametrize("shared_token", [False, True], ids=["own token", "shared token"])
def test_batch_claim_and_completion_are_answered_by_the_fast_path_as_by_django(
    wsgi: Wsgi, owner: User, settings: Any, shared_token: bool
) -> None:
    fast = batch_loop(wsgi, new_setup(wsgi, owner, num_tasks=4, shared_token=shared_token))
    assert not any(a.by_django for a in fast)
    settings.FARM_FAST_PATH = False
    full = batch_loop(wsgi, new_setup(wsgi, owner, num_tasks=4, shared_token=shared_token))
    assert all(a.by_django for a in full)

    def without_ids(answer: Answer) -> tuple[int, dict[str, str], Any]:
        status, headers, body = comparable(answer)
        for task in body.get("tasks", []):
            task.pop("id")
        return status, headers, body

    assert [without_ids(a) for a in fast] == [without_ids(a) for a in full]
    assert [t["task"] for t in fast[0].json()["tasks"]] == [0, 1]
    assert [t["task"] for t in fast[1].json()["tasks"]] == [2, 3]
    assert fast[2].json() == {"done": [0, 1], "refused": [4, 9]}
    assert fast[3].json() == {"tasks": []}
    assert ["Set-Cookie" in a.headers for a in fast] == [shared_token, False, False, False]


@pytest.mark.parametrize("path, body", [
    ("claim", {"worker_uuid": "nobody", "count": 2}),
    ("claim", {"worker_uuid": "{worker}", "count": 0}),
    ("done", {"worker_uuid": "{worker}", "tasks": [-1]}),
    ("done", {"worker_uuid": "nobody", "tasks": [1]}),
])
def test_batch_requests_the_fast_path_declines(wsgi: Wsgi, owner: User, path: str, body: dict[str, Any]) -> None:
    setup = new_setup(wsgi, owner)
    body = {k: (v.format(worker=setup.worker) if isinstance(v, str) else v) for k, v in body.items()}
    answer = wsgi("POST", f"/api/runs/{setup.run}/tasks/{path}", body, auth=setup.auth)
    assert answer.by_django and answer.status in (400, 404)
    assert answer.json()["code"]


def test_switched_off_everything_goes_to_django(wsgi: Wsgi, owner: User, settings: Any) -> None:
    settings.FARM_FAST_PATH = False
    answers = worker_loop(wsgi, new_setup(wsgi, owner))
    assert all(a.by_django for a in answers)


def test_other_paths_never_reach_the_fast_path(wsgi: Wsgi, owner: User) -> None:
    setup = new_setup(wsgi, owner)
    assert wsgi("GET", f"/api/runs/{setup.run}", auth=setup.auth).by_django
    assert wsgi("GET", "/healthz").by_django


def test_a_stale_token_binding_in_this_process_does_not_refuse_the_holder(wsgi: Wsgi, owner: User) -> None:
    """Another worker once registered with this token and was deleted (the cache of this process still
    names it): the full path reads the binding afresh before it would answer 409."""
    from farm import selectors

    setup = new_setup(wsgi, owner)
    number = wsgi("POST", f"/api/runs/{setup.run}/task", {"worker_uuid": setup.worker}, auth=setup.auth).json()["task"]
    token_id = Worker.objects.get(uuid=setup.worker).token_id
    assert token_id is not None
    selectors._token_workers[token_id] = "deleted-worker"
    answer = wsgi("PUT", f"/api/runs/{setup.run}/tasks/{number}", {"percentCompleted": 40}, auth=setup.auth)
    assert answer.by_django and answer.status == 204
    assert Task.objects.get(run__uuid=setup.run, task=number).percent_completed == 40
    assert selectors._token_workers[token_id] == setup.worker  # the cache is mended
