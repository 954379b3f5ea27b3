from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator

from coordinator.asgi import application
from progress.services import events_deliver


def publish(
    topic: str, kind: str, text: str = "", state: dict[str, Any] | None = None, owner_id: int | None = None
) -> int:
    """Store one event the way `progress_publish` does after commit; returns its id."""
    [event] = events_deliver([{"topic": topic, "kind": kind, "text": text, "state": state or {}, "owner_id": owner_id}])
    return event["id"]


def run(coro_fn: Callable[[], Awaitable[Any]]) -> Any:
    """Run an async test body from a sync test (DB access goes back to the test's thread)."""
    from asgiref.sync import async_to_sync

    return async_to_sync(coro_fn)()


async def ws_connect(
    path: str = "/ws/progress/", headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[WebsocketCommunicator, bool, int | None]:
    communicator = WebsocketCommunicator(
        application, path, headers=[(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1"), *(headers or [])]
    )
    connected, code = await communicator.connect()
    return communicator, connected, code


async def ws_receive_until(
    communicator: WebsocketCommunicator, predicate: Callable[[dict[str, Any]], bool], timeout: float = 5.0
) -> list[dict[str, Any]]:
    """Messages received until (and including) the first one matching `predicate`."""
    seen: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise AssertionError(f"no matching message within {timeout}s; got {seen}")
        message = json.loads(await communicator.receive_from(timeout=remaining))
        seen.append(message)
        if predicate(message):
            return seen


@pytest.fixture(autouse=True)
def _fast_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("progress.conf.POLL_INTERVAL_SECONDS", 0.02)


class SseClient:
    """Drives `/progress/events` through the real ASGI application, reading the stream as it comes."""

    def __init__(self, query: str = "", headers: dict[str, str] | None = None) -> None:
        from channels.testing import ApplicationCommunicator

        headers = {"Accept": "text/event-stream", **(headers or {})}
        raw_headers = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        scope = {
            "type": "http",
            "http_version": "1.1",
            "method": "GET",
            "path": "/progress/events",
            "raw_path": b"/progress/events",
            "root_path": "",
            "scheme": "http",
            "query_string": query.encode(),
            "headers": [(b"host", b"127.0.0.1"), *raw_headers],
            "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 80),
        }
        self.communicator = ApplicationCommunicator(application, scope)
        self.buffer = ""
        self.status = 0
        self.headers: dict[str, str] = {}
        self.ended = False

    async def open(self) -> None:
        await self.communicator.send_input({"type": "http.request", "body": b"", "more_body": False})
        start = await self.communicator.receive_output(timeout=10)
        assert start["type"] == "http.response.start"
        self.status = start["status"]
        self.headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}

    async def read_until(self, needle: str, timeout: float = 5.0) -> str:
        """Everything received so far once `needle` has arrived."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while needle not in self.buffer:
            remaining = deadline - loop.time()
            if remaining <= 0 or self.ended:
                raise AssertionError(f"{needle!r} not received; got {self.buffer!r}")
            message = await self.communicator.receive_output(timeout=remaining)
            if message["type"] == "http.response.body":
                self.buffer += message.get("body", b"").decode()
                self.ended = not message.get("more_body", False)
        return self.buffer

    async def read_all(self, timeout: float = 5.0) -> str:
        while not self.ended:
            message = await self.communicator.receive_output(timeout=timeout)
            if message["type"] == "http.response.body":
                self.buffer += message.get("body", b"").decode()
                self.ended = not message.get("more_body", False)
        return self.buffer

    async def close(self) -> None:
        await self.communicator.send_input({"type": "http.disconnect"})
        try:
            await self.communicator.wait(timeout=5)
        except Exception:
            pass


def parse_sse(text: str) -> list[dict[str, str]]:
    """Frames of an SSE text as dicts of their fields (comments dropped)."""
    frames = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value
        if fields:
            frames.append(fields)
    return frames


def named_events(text: str) -> list[tuple[str, dict[str, str]]]:
    return [(f["event"], json.loads(f["data"])) for f in parse_sse(text) if "event" in f]


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, message: str = "condition") -> Any:
    """Poll `condition` until it returns something truthy."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} not met within {timeout}s (last: {value!r})")
        time.sleep(0.02)


@pytest.fixture
def listener(transactional_db: None, socket_dir: Any, settings: Any) -> Any:
    """The socket listener running in a thread of this process (its own event loop)."""
    import threading

    from progress.listener import Listener

    settings.PROGRESS_MAX_STREAMS = getattr(settings, "PROGRESS_MAX_STREAMS", 1000)
    instance = Listener(socket_dir / "seq.sock", socket_dir / "stream.sock")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(instance.serve(),), daemon=True)
    thread.start()
    wait_for(instance.ready.is_set, message="listener ready")
    yield instance
    loop.call_soon_threadsafe(instance.stop)
    thread.join(15)
    loop.close()


def topic_row(topic: str) -> Any:
    from progress.models import ProgressTopic

    return ProgressTopic.objects.filter(topic=topic).first()


def events_of(topic: str) -> list[tuple[str, str]]:
    from progress.models import ProgressEvent

    return list(ProgressEvent.objects.filter(topic=topic).order_by("id").values_list("kind", "text"))


def stop_process(proc: Any, timeout: float, group: bool = False) -> None:
    """SIGTERM, then SIGKILL (the whole process group when `group`) if it does not stop in time."""
    import os
    import signal
    import subprocess

    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        if not group:
            proc.kill()
        proc.wait()
    if group:  # whatever the leader left behind (its own children) must not outlive the test
        import contextlib

        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def run_asgi_server(**extra_env: str) -> Any:
    """Start daphne (the production ASGI server) on a free port against the test database."""
    import subprocess
    from contextlib import contextmanager

    from tests.live import BIN, ROOT, free_port, server_env, wait_for_http

    @contextmanager
    def server() -> Any:
        port = free_port()
        env = server_env(**extra_env)
        proc = subprocess.Popen(
            [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(port), "coordinator.asgi:application"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for_http(f"{base}/healthz", proc=proc)
            yield base
        finally:
            stop_process(proc, 15)

    return server()


def run_listener_process(socket_dir: Any, **extra_env: str) -> Any:
    """Start `manage.py progress_listen` as its own process on sockets in `socket_dir`."""
    import subprocess
    import sys
    from contextlib import contextmanager

    from tests.live import ROOT, server_env

    @contextmanager
    def listener() -> Any:
        seq = socket_dir / "seq.sock"
        proc = subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "progress_listen",
                "--socket",
                str(seq),
                "--stream-socket",
                str(socket_dir / "stream.sock"),
            ],
            cwd=ROOT,
            env=server_env(**extra_env),
        )
        try:
            wait_for(seq.exists, timeout=30, message="listener socket")
            yield seq
        finally:
            stop_process(proc, 15)

    return listener()


class SseReader:
    """Reads an SSE stream over real HTTP (1.0: the body is the raw stream) in a background thread."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        import socket
        import threading
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=30)
        lines = [
            f"GET {parts.path}?{parts.query} HTTP/1.0",
            f"Host: {parts.netloc}",
            "Accept: text/event-stream",
            *(f"{k}: {v}" for k, v in (headers or {}).items()),
        ]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.frames: list[dict[str, str]] = []
        self.head = ""
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        raw = b""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return
                raw += chunk
                if not self.head:
                    if b"\r\n\r\n" not in raw:
                        continue
                    head, raw = raw.split(b"\r\n\r\n", 1)
                    self.head = head.decode()
                while b"\n\n" in raw:
                    block, raw = raw.split(b"\n\n", 1)
                    with self.lock:
                        self.frames.extend(parse_sse(block.decode() + "\n\n"))
        except OSError:
            return

    def events(self) -> list[tuple[str, dict[str, str]]]:
        with self.lock:
            return [(f["event"], json.loads(f["data"])) for f in self.frames if "event" in f]

    def last_id(self) -> str:
        with self.lock:
            return [f["id"] for f in self.frames if "id" in f][-1]

    def close(self) -> None:
        import socket

        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(5)


def serve_platform(var_dir: Any, qcluster: bool = False, port: int | None = None, **extra_env: str) -> Any:
    """`manage.py serve` (granian + daphne + front door + socket listener [+ django-q2]) on the test DB.

    Its own var directory keeps its sockets apart from other test runs; yields the base URL."""
    import subprocess
    import sys
    from contextlib import contextmanager

    from tests.live import ROOT, free_port, server_env, wait_for_http

    @contextmanager
    def platform() -> Any:
        argv = [sys.executable, "manage.py", "serve", "--port", str(port or free_port()), "--workers", "1"]
        if not qcluster:
            argv.append("--no-qcluster")
        env = server_env(COORDINATOR_VAR_DIR=str(var_dir), Q_WORKERS="1", **extra_env)
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, start_new_session=True)
        base = f"http://127.0.0.1:{argv[4]}"
        try:
            wait_for_http(f"{base}/healthz", timeout=60, proc=proc)
            wait_for((var_dir / "run" / "progress.sock").exists, timeout=30, message="progress socket")
            yield base
        finally:
            stop_process(proc, 40, group=True)

    return platform()


def wait_until(page: Any, predicate: str, arg: Any = None, timeout: float = 30000) -> None:
    """Wait until the JavaScript `predicate` (a function of `arg`) is true on the page. Polled from
    here through `page.evaluate`: Playwright's own `wait_for_function` polls by evaluating strings
    inside the page, which the platform's Content-Security-Policy (no 'unsafe-eval') forbids."""
    import time

    deadline = time.monotonic() + timeout / 1000  # a bound for a page that never gets there
    while not page.evaluate(predicate, arg):
        assert time.monotonic() < deadline, f"never true: {predicate}"
        page.wait_for_timeout(50)


def admin_login(page: Any, base: str, user: Any) -> None:
    from tests.factories import DEFAULT_PASSWORD

    page.goto(f"{base}/admin/login/")
    page.fill("#id_username", user.email)
    page.fill("#id_password", DEFAULT_PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{base}/admin/")
