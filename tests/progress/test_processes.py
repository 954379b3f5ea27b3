"""Delivery across processes: publishers and the socket listener in their own processes, readers
on daphne instances. Runs without Redis (event-table polling) and with REDIS_URL (channels-redis)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.test import override_settings

from progress.client import stream
from tests.conftest import access_token_for
from tests.live import ROOT, free_port, server_env
from tests.progress.conftest import SseReader, run_asgi_server, run_listener_process, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PUBLISH = """
import django; django.setup()
from django.db import transaction
from progress.services import progress_publish
with transaction.atomic():
    progress_publish(topic="job:42", kind="new", text="export from a worker", owner_id={owner})
    progress_publish(topic="job:42", kind="msg", text="half", state={{"percent": 50}}, owner_id={owner})
progress_publish(topic="job:42", kind="end", text="", owner_id={owner})
"""


def test_events_from_other_processes_reach_readers_on_two_asgi_instances(admin, user, socket_dir) -> None:
    with run_asgi_server() as first, run_asgi_server() as second, run_listener_process(socket_dir) as seq:
        admin_reader = SseReader(f"{first}/progress/events?token={access_token_for(admin)}")
        user_reader = SseReader(f"{second}/progress/events?token={access_token_for(user)}")
        wait_for(lambda: admin_reader.frames and user_reader.frames, message="streams open")
        # a "django-q2 worker": another process publishing inside a transaction
        subprocess.run(
            [sys.executable, "-c", PUBLISH.format(owner=user.pk)], cwd=ROOT, env=server_env(), check=True, timeout=60
        )
        # a script on the socket, through the Python helper
        with stream("socket task", seq) as s:
            s.send("working", percent=10)
        expected_job = [
            ("new", {"job:42": "export from a worker"}),
            ("msg", {"job:42": "half"}),
            ("end", {"job:42": ""}),
        ]
        wait_for(lambda: len(admin_reader.events()) >= 6, timeout=20, message="admin received everything")
        wait_for(lambda: len(user_reader.events()) >= 3, timeout=20, message="user received the job")
        assert admin_reader.events() == [
            *expected_job,
            ("new", {"0": "socket task"}),
            ("msg", {"0": "[10%] working"}),
            ("end", {"0": ""}),
        ]
        assert user_reader.events() == expected_job  # the socket stream is admins-only
        admin_reader.close()
        user_reader.close()


def test_no_event_lost_across_a_reconnect(admin, socket_dir) -> None:
    token = access_token_for(admin)
    with run_asgi_server() as base, run_listener_process(socket_dir) as seq:
        reader = SseReader(f"{base}/progress/events?token={token}")
        wait_for(lambda: reader.frames)
        with stream("long task", seq) as s:
            s.send("one")
            wait_for(lambda: ("msg", {"0": "one"}) in reader.events())
            last = reader.last_id()
            reader.close()  # the browser loses its connection ...
            for text in ("two", "three", "four"):
                s.send(text)
            # ... and reconnects with the id it saw last, as EventSource does
            again = SseReader(f"{base}/progress/events?token={token}", headers={"Last-Event-ID": last})
            wait_for(lambda: ("msg", {"0": "four"}) in again.events())
            assert again.events() == [("msg", {"0": "two"}), ("msg", {"0": "three"}), ("msg", {"0": "four"})]
            again.close()


@contextmanager
def throwaway_redis(port: int) -> Iterator[subprocess.Popen[bytes]]:
    """A redis-server of this test's own on `port` (never the shared one)."""
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    wait_for(lambda: subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout == b"PONG\n")
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_redis_restart_while_streaming_stores_each_event_once_and_readers_get_them_all(admin, socket_dir) -> None:
    """Redis goes away mid-stream and comes back: the listener stores every event once (its
    broadcast failing is not retried with the write), and the reader gets each one exactly once
    once the layer is back (the hub reads what the layer missed from the event table)."""
    from progress.models import ProgressEvent

    port = free_port()
    redis_env = {"REDIS_URL": f"redis://127.0.0.1:{port}/0"}
    token = access_token_for(admin)
    server = throwaway_redis(port)
    server.__enter__()
    try:
        with run_asgi_server(**redis_env) as base, run_listener_process(socket_dir, **redis_env) as seq:
            reader = SseReader(f"{base}/progress/events?token={token}")
            wait_for(lambda: reader.frames, message="stream open")
            with stream("through an outage", seq) as s:
                for n in range(20):
                    s.send(f"before {n}")
                wait_for(lambda: ("msg", {"0": "before 19"}) in reader.events(), message="live before the outage")
                server.__exit__(None, None, None)  # Redis stops
                for n in range(20):
                    s.send(f"during {n}")
                wait_for(
                    lambda: ProgressEvent.objects.filter(text="during 19").exists(), message="stored in the outage"
                )
                server = throwaway_redis(port)  # ... and comes back, empty
                server.__enter__()
                for n in range(20):
                    s.send(f"after {n}")
            wait_for(lambda: ("end", {"0": ""}) in reader.events(), timeout=60, message="the stream's end")
            texts = [data["0"] for kind, data in reader.events() if kind == "msg"]
            reader.close()
    finally:
        server.__exit__(None, None, None)
    expected = [f"{phase} {n}" for phase in ("before", "during", "after") for n in range(20)]
    assert sorted(texts) == sorted(expected)  # every event, once (the table read may reorder a few)
    stored = list(ProgressEvent.objects.filter(topic="stream:0", kind="msg").values_list("text", flat=True))
    assert sorted(stored) == sorted(expected)  # stored exactly once


def _ws_close_code(base: str, token: str) -> int:
    """Open `/ws/progress/` by hand (RFC 6455 handshake) and return the code of the server's close frame."""
    import base64
    import os
    import socket
    from urllib.parse import urlsplit

    netloc = urlsplit(base).netloc
    host, port = netloc.split(":")
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            (
                f"GET /ws/progress/?token={token} HTTP/1.1\r\nHost: {netloc}\r\nOrigin: {base}\r\n"
                f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        raw = b""
        while b"\r\n\r\n" not in raw:
            raw += sock.recv(4096)
        head, frames = raw.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head
        while len(frames) < 4:
            chunk = sock.recv(4096)
            assert chunk, "closed without a close frame"
            frames += chunk
        assert frames[0] == 0x88, frames  # a close frame, unfragmented
        return int.from_bytes(frames[2:4], "big")


def _sse_status(base: str, token: str) -> int:
    import requests

    response = requests.get(
        f"{base}/progress/events?token={token}", headers={"Accept": "text/event-stream"}, stream=True, timeout=20
    )
    response.close()
    return int(response.status_code)


@contextmanager
def _daphne(**extra_env: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    from tests.live import BIN, wait_for_http
    from tests.progress.conftest import stop_process

    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(port), "coordinator.asgi:application"],
        cwd=ROOT,
        env=server_env(**extra_env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/healthz", proc=proc)
        yield base, proc
    finally:
        if proc.poll() is None:
            stop_process(proc, 15)


def test_the_per_user_stream_cap_holds_across_asgi_processes(user) -> None:
    """A user at the cap on one daphne is refused on another (SSE 429, WebSocket 4429), and gets
    the slot there once the stream on the first one closes."""
    token = access_token_for(user)
    with _daphne(PROGRESS_STREAMS_PER_USER="1") as (first, _), _daphne(PROGRESS_STREAMS_PER_USER="1") as (second, _):
        holder = SseReader(f"{first}/progress/events?token={token}")
        wait_for(lambda: holder.frames, message="the first stream open")
        assert _sse_status(second, token) == 429
        assert _ws_close_code(second, token) == 4429
        assert _ws_close_code(first, token) == 4429
        holder.close()  # the user closes the tab on the first process ...
        wait_for(
            lambda: _sse_status(second, token) == 200, message="the slot free again on the second"
        )  # ... and may open one here


def test_a_killed_holders_stream_slot_comes_back_when_its_lease_lapses(user) -> None:
    """A daphne killed with streams open cannot give their slots back; they stay taken until the
    lease (renewed on each keep-alive) lapses, then any process may hand them out again."""
    from datetime import timedelta

    from django.utils import timezone

    from progress import conf
    from progress.services import stream_lease_acquire

    token = access_token_for(user)
    with _daphne(PROGRESS_STREAMS_PER_USER="1") as (first, proc), _daphne(PROGRESS_STREAMS_PER_USER="1") as (second, _):
        holder = SseReader(f"{first}/progress/events?token={token}")
        wait_for(lambda: holder.frames, message="the stream open")
        proc.kill()  # SIGKILL: no `finally` runs, the slot is not given back
        proc.wait()
        holder.close()
        assert _sse_status(second, token) == 429  # still taken: nobody can tell a dead holder yet
        with override_settings(PROGRESS_STREAMS_PER_USER=1):
            assert stream_lease_acquire(user_id=user.pk) is None
            later = timezone.now() + timedelta(seconds=conf.lease_seconds() + 1)
            assert stream_lease_acquire(user_id=user.pk, now=later) is not None  # the lapsed lease is free


TAKE_SLOT = """
import os, time, django; django.setup()
from progress.services import stream_lease_acquire
while not os.path.exists({start!r}):
    time.sleep(0.005)
print(stream_lease_acquire(user_id={user}))
"""


def test_processes_taking_slots_at_once_never_pass_the_cap(user, tmp_path) -> None:
    """Five processes take a slot of one user at the same moment, with room for two: two get one,
    each a different slot (the unique (user, slot) constraint decides), three get none."""
    from progress.models import StreamLease

    start = tmp_path / "go"
    takers = [
        subprocess.Popen(
            [sys.executable, "-c", TAKE_SLOT.format(start=str(start), user=user.pk)],
            cwd=ROOT,
            env=server_env(PROGRESS_STREAMS_PER_USER="2"),
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(5)
    ]
    start.touch()
    answers = [taker.communicate(timeout=120)[0].strip() for taker in takers]
    assert answers.count("None") == 3 and all(a.isdigit() for a in answers if a != "None"), answers
    assert sorted(StreamLease.objects.filter(user=user).values_list("slot", flat=True)) == [0, 1]
