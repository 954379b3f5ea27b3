from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import time

import pytest

from progress.client import stream
from progress.models import ProgressTopic
from tests.progress.conftest import events_of, topic_row, wait_for


def seqpacket(path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.connect(str(path))
    return sock


def ended(topic: str, count: int = 1):
    return lambda: [k for k, _ in events_of(topic)].count("end") >= count


def test_sockets_are_private(listener) -> None:
    for path in (listener.seqpacket_path, listener.stream_path):
        mode = os.stat(path).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600


@pytest.mark.skipif(shutil.which("socat") is None, reason="socat is not installed")
def test_socat_as_the_seed_documents(listener) -> None:
    proc = subprocess.Popen(["socat", "-", f"UNIX-CONNECT:{listener.seqpacket_path},type=5"], stdin=subprocess.PIPE)
    assert proc.stdin is not None
    for line, expected in ((b"nightly backup\n", 1), (b"copying /home\n", 2), (b"50% done\n", 3)):
        proc.stdin.write(line)
        proc.stdin.flush()
        wait_for(lambda n=expected: len(events_of("stream:0")) >= n, message=f"{line!r} arrived")
    proc.stdin.close()
    proc.wait(10)
    wait_for(ended("stream:0"))
    assert events_of("stream:0") == [
        ("new", "nightly backup"),
        ("msg", "copying /home"),
        ("msg", "50% done"),
        ("end", ""),
    ]
    assert topic_row("stream:0").state == {"percent": 50.0}


def test_framing_strips_one_newline_or_nul_and_truncates(listener) -> None:
    with seqpacket(listener.seqpacket_path) as sock:
        sock.send(b"N" * 150 + b"\n")
        for packet in (b"two newlines\n\n", b"nul\x00", b"plain", b"x" * 1500, b"y" * 100_000, "é".encode() * 600):
            sock.send(packet)
    wait_for(ended("stream:0"))
    events = events_of("stream:0")
    assert events[0] == ("new", "N" * 100)
    assert events[1:] == [
        ("msg", "two newlines\n"),
        ("msg", "nul"),
        ("msg", "plain"),
        ("msg", "x" * 1000),
        ("msg", "y" * 1000),
        ("msg", "é" * 600),
        ("end", ""),
    ]


def test_uids_are_small_round_robin_and_reused(listener, settings) -> None:
    listener.uids.size = 3
    a, b = seqpacket(listener.seqpacket_path), seqpacket(listener.seqpacket_path)
    a.send(b"a\n")
    b.send(b"b\n")
    wait_for(lambda: topic_row("stream:1"))
    a.close()
    wait_for(ended("stream:0"))
    c = seqpacket(listener.seqpacket_path)
    c.send(b"c\n")
    wait_for(lambda: topic_row("stream:2"))
    d = seqpacket(listener.seqpacket_path)
    d.send(b"d\n")  # uid 0 was released: reused
    wait_for(lambda: topic_row("stream:0").name == "d")
    refused = seqpacket(listener.seqpacket_path)  # every uid in use: closed at once
    refused.settimeout(5)
    assert refused.recv(10) == b""
    for sock in (b, c, d, refused):
        sock.close()
    wait_for(lambda: not ProgressTopic.objects.filter(ended_at__isnull=True).exists())
    assert [n for (n,) in ProgressTopic.objects.order_by("topic").values_list("name")] == ["d", "b", "c"]


def test_hostile_clients_do_not_disturb_others(listener) -> None:
    silent = seqpacket(listener.seqpacket_path)  # connects and never says anything
    garbage = seqpacket(listener.seqpacket_path)
    garbage.send(bytes(range(256)))
    garbage.send(b"\xff\xfe\x00\x00" * 5000)
    flood = [seqpacket(listener.seqpacket_path) for _ in range(200)]
    for i, sock in enumerate(flood):
        sock.send(f"flood {i}\n".encode())
    for sock in flood:
        sock.close()
    with seqpacket(listener.seqpacket_path) as good:
        good.send(b"well behaved\n")
        good.send(b"still fine\n")
    wait_for(
        lambda: ProgressTopic.objects.filter(name="well behaved", ended_at__isnull=False, text="still fine").exists()
    )
    wait_for(lambda: ProgressTopic.objects.filter(name__startswith="flood", ended_at__isnull=False).count() == 200)
    garbage_row = topic_row("stream:1")
    assert garbage_row.name.startswith("\ufffd") and "\x00" not in garbage_row.text and len(garbage_row.text) <= 1000
    garbage.close()
    silent.close()
    wait_for(lambda: not ProgressTopic.objects.filter(ended_at__isnull=True).exists())


def test_stream_socket_is_newline_framed(listener) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(listener.stream_path))
        sock.sendall(b"line tool\r\nfirst\nsec")
        time.sleep(0.05)  # a line split across two writes
        sock.sendall(b"ond\n" + b"z" * 200_000 + b"\nafter the long line\nno newline at the end")
    wait_for(ended("stream:0"))
    assert events_of("stream:0") == [
        ("new", "line tool"),
        ("msg", "first"),
        ("msg", "second"),
        ("msg", "z" * 1000),
        ("msg", "after the long line"),
        ("msg", "no newline at the end"),
        ("end", ""),
    ]


def test_python_helper_reports_percent_and_ends_on_exceptions(listener) -> None:
    with stream("helper task", listener.seqpacket_path) as s:
        s.send("halfway", percent=50)
        wait_for(lambda: (topic_row("stream:0") or ProgressTopic()).text == "[50%] halfway")
    assert topic_row("stream:0").state == {"percent": 50.0}
    with pytest.raises(ZeroDivisionError), stream("doomed", listener.seqpacket_path):
        1 / 0  # noqa: B018
    wait_for(ended("stream:1"))
    assert events_of("stream:1")[-2:] == [("msg", "failed: ZeroDivisionError: division by zero"), ("end", "")]


def test_helper_without_listener_is_a_quiet_no_op(socket_dir, capsys) -> None:
    with stream("nobody listens", socket_dir / "absent.sock") as s:
        s.send("still works")
    assert "cannot reach" in capsys.readouterr().err
    with pytest.raises(OSError), stream("strict", socket_dir / "absent.sock", required=True):
        pass


def test_streams_left_live_by_a_dead_listener_are_ended_on_start(transactional_db, socket_dir) -> None:
    import asyncio
    import threading

    from progress.listener import Listener
    from tests.progress.conftest import publish

    publish("stream:7", "new", "orphan")
    instance = Listener(socket_dir / "s.sock", socket_dir / "t.sock")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(instance.serve(),), daemon=True)
    thread.start()
    wait_for(instance.ready.is_set)
    loop.call_soon_threadsafe(instance.stop)
    thread.join(10)
    assert events_of("stream:7")[-1] == ("end", "listener restarted")
