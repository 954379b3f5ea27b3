"""Delivery across processes: publishers and the socket listener in their own processes, readers
on daphne instances. Runs without Redis (event-table polling) and with REDIS_URL (channels-redis)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from progress.client import stream
from tests.conftest import access_token_for
from tests.live import ROOT, server_env
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
