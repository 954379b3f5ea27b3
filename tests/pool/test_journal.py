from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from django.core.management import call_command

from pool.models import Delivery, Device, Message
from pool.services import journal_reconcile, journal_write_pending, pool_import_jsonl
from pool.tokens import device_token_encode
from pool.wire import message_to_wire
from tests.live import ROOT, run_wsgi_server, server_env
from tests.pool.conftest import device_client
from tests.progress.conftest import wait_for


@pytest.fixture
def journal(tmp_path: Path, settings) -> Path:
    settings.POOL_JOURNAL_DIR = str(tmp_path / "journal")
    return tmp_path / "journal"


def test_log_round_trip_write_cat_import(
    journal: Path, make_device, master, client_for, django_capture_on_commit_callbacks
):
    d1, d2 = make_device("a"), make_device("b")
    client = client_for(master)
    with django_capture_on_commit_callbacks(execute=True):
        task = client.post(
            "/pool/task", {"to": f"device:[{d1.pk},{d2.pk}]", "title": "über", "body": "line\nbreak"}, format="json"
        ).json()
        bc = client.post("/pool/task", {"to": "device:*", "title": "all"}, format="json").json()
        device_client(d1).post("/pool/response", {"parent_id": task["id"], "status": "done"}, format="json")
        device_client(d2).post(
            "/pool/response", {"parent_id": task["id"], "status": "progress", "meta": {"progress": 50}}, format="json"
        )
        device_client(d2).post(
            "/pool/response", {"parent_id": bc["id"], "status": "failed", "body": "no"}, format="json"
        )
        device_client(d1).post("/pool/heartbeat", {}, format="json")
    device_client(d1).get("/pool/pending")
    assert not journal.exists()  # written from the database by the writer, never in the request
    assert journal_write_pending() == Message.objects.count()
    assert journal_write_pending() == 0
    files = sorted(journal.glob("*.jsonl"))
    assert len(files) == 1 and files[0].name == Message.objects.first().ts.strftime("%Y-%m-%d") + ".jsonl"
    # A day's history is `cat` as in the seed.
    text = subprocess.run(["cat", str(files[0])], capture_output=True, text=True, check=True).stdout
    lines = [json.loads(line) for line in text.splitlines()]
    before = [message_to_wire(m) for m in Message.objects.order_by("seq")]
    assert lines == before
    states_before = sorted(Delivery.objects.values_list("task__msg_id", "device_id", "state"))

    # A fresh database (same devices): import the day file, get the same messages and states back.
    Message.objects.all().delete()
    Device.objects.update(broadcasts_seen_until=None)
    report = pool_import_jsonl(path=files[0])
    assert (report.created, report.skipped, report.errors) == (len(lines), 0, [])
    assert [message_to_wire(m) for m in Message.objects.order_by("ts", "seq")] == sorted(lines, key=lambda m: m["ts"])
    device_client(d1).get("/pool/pending")  # materialises the broadcast for d1 again
    device_client(d2).get("/pool/pending")
    assert sorted(Delivery.objects.values_list("task__msg_id", "device_id", "state")) == states_before
    assert Delivery.objects.get(task__msg_id=task["id"], device=d2).progress == 50


def test_a_write_the_disk_cuts_short_leaves_no_partial_line_and_is_tried_again(journal: Path, make_device, monkeypatch):
    device = make_device("a")
    for n in range(3):
        assert device_client(device).post("/pool/heartbeat", {"body": f"beat {n}"}, format="json").status_code == 201
    assert journal_write_pending() == 3
    (day_file,) = journal.glob("*.jsonl")
    before = day_file.read_bytes()
    assert device_client(device).post("/pool/heartbeat", {"body": "x" * 5000}, format="json").status_code == 201
    real_write = os.write

    def disk_fills_up(fd: int, data) -> int:  # half the line reaches the disk, then ENOSPC
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", disk_fills_up)
    with pytest.raises(OSError):
        journal_write_pending()
    assert day_file.read_bytes() == before  # the half line was taken back
    assert Message.objects.filter(journal_pending=True).count() == 1
    monkeypatch.setattr(os, "write", real_write)
    assert journal_write_pending() == 1
    lines = day_file.read_bytes().splitlines()
    assert len(lines) == 4 and json.loads(lines[-1])["body"] == "x" * 5000


def test_a_writer_that_stopped_before_recording_its_write_does_not_write_twice(journal: Path, make_device):
    device = make_device("a")
    device_client(device).post("/pool/heartbeat", {"body": "once"}, format="json")
    assert journal_write_pending() == 1
    Message.objects.update(journal_pending=True)  # as if the writer died between write and mark
    assert journal_reconcile() == 1
    assert journal_write_pending() == 0
    (day_file,) = journal.glob("*.jsonl")
    assert len(day_file.read_bytes().splitlines()) == 1


def test_without_a_day_log_nothing_waits_for_one(make_device, settings):
    settings.POOL_JOURNAL_DIR = None
    device_client(make_device("a")).post("/pool/heartbeat", {}, format="json")
    assert not Message.objects.filter(journal_pending=True).exists()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_full_disk_never_changes_an_answer_and_the_day_log_catches_up_whole(tmp_path: Path, make_device):
    """A real tmpfs fills up under a live server and the day log's writer: every heartbeat is
    still answered 201, a retry with the same Idempotency-Key gets the first answer and stores
    nothing, /healthz names the full disk and the log behind, and once there is room again the
    writer catches up: every line whole, each message once, /healthz fine again."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    journal = tmp_path / "journal"
    journal.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32k", "tmpfs", str(journal)], check=True)
    # `full` below 4 kB free (not 50 MB: the whole disk is 32 kB), `behind` after a second.
    env = {"POOL_JOURNAL_DIR": str(journal), "HEALTH_LOW_DISK_BYTES": "4096", "POOL_JOURNAL_BEHIND_SECONDS": "1"}
    device = make_device("a")
    token, _ = device_token_encode(device_id=device.pk)
    writer = subprocess.Popen(
        [sys.executable, "manage.py", "pool_journal"],
        cwd=ROOT,
        env=server_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

    def day_log_health(base: str) -> tuple[str, str]:
        body = requests.get(f"{base}/healthz", timeout=10).json()
        components = body.get("components") or body["extra"]["components"]
        return components["day log disk"], components["day log"]

    try:
        with run_wsgi_server(**env) as base:
            assert day_log_health(base) == ("ok", "ok")
            first_answers, retries = {}, []
            for n in range(80):  # ~64 kB of lines for a 32 kB disk
                headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": f"beat-{n}"}
                answer = requests.post(f"{base}/pool/heartbeat", json={"body": f"{n:04d}" * 200}, headers=headers)
                assert answer.status_code == 201, answer.text[:300]
                first_answers[n] = answer.json()["id"]
                if n % 4 == 0:  # the device lost the answer and sends the same request again
                    retries.append(
                        (n, requests.post(f"{base}/pool/heartbeat", json={"body": f"{n:04d}" * 200}, headers=headers))
                    )
            for n, retry in retries:
                assert retry.status_code == 201 and retry.headers.get("Idempotent-Replayed") == "true"
                assert retry.json()["id"] == first_answers[n]
            wait_for(lambda: Message.objects.filter(journal_pending=True).exists(), message="the disk never filled")
            # The writer put back what its failed batch wrote; another program takes that room too.
            filler = os.open(journal / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                while os.write(filler, b"\0" * 1024):
                    pass
            except OSError:  # ENOSPC
                pass
            finally:
                os.close(filler)
            wait_for(lambda: day_log_health(base) == ("full", "behind"), timeout=60, message="/healthz shows it")
            subprocess.run(["mount", "-o", "remount,size=16m", str(journal)], check=True)
            wait_for(lambda: not Message.objects.filter(journal_pending=True).exists(), timeout=60)
            assert day_log_health(base) == ("ok", "ok")
    finally:
        writer.terminate()
        output = writer.communicate(timeout=30)[0]
        lines = [line for path in sorted(journal.glob("*.jsonl")) for line in path.read_bytes().splitlines()]
        subprocess.run(["umount", str(journal)], check=False)
    assert "cannot write" in output and "writing again" in output, output
    ids = [json.loads(line)["id"] for line in lines]  # every line parses: whole
    assert len(ids) == len(set(ids)) == Message.objects.count() == 80
    assert set(ids) == set(Message.objects.values_list("msg_id", flat=True))


def test_import_command_reports_bad_lines_and_summary(tmp_path: Path, make_device, capsys):
    d1 = make_device("a")
    ok = {
        "id": "msg_" + "c" * 32,
        "ts": "2026-01-02T03:04:05Z",
        "from": "backend",
        "to": f"device:{d1.pk}",
        "type": "task",
        "title": "x",
        "body": "",
        "parent_id": None,
        "meta": {},
    }
    bad_type = {**ok, "id": "msg_" + "d" * 32, "type": "order"}
    bad_ts = {**ok, "id": "msg_" + "e" * 32, "ts": "yesterday"}
    path = tmp_path / "2026-01-02.jsonl"
    path.write_bytes(
        (json.dumps(ok) + "\n" + json.dumps(bad_type) + "\n\n[1,2]\n" + json.dumps(bad_ts) + "\n").encode()
        + b"\xff\xfe\n"
        + (json.dumps({**ok, "id": "msg_" + "f" * 32}) + "\n").encode()
    )
    with pytest.raises(SystemExit):
        call_command("import_pool_jsonl", str(path), str(tmp_path / "missing.jsonl"))
    out, err = capsys.readouterr()
    assert f"{path}:2: `type` must be one of" in err
    assert f"{path}:4: not a JSON object" in err
    assert f"{path}:5: `ts`" in err
    assert f"{path}:6: not UTF-8" in err
    assert "missing.jsonl:0: cannot open" in err
    assert "2 created, 0 already present, 5 bad lines" in out
    assert Message.objects.count() == 2
    assert Delivery.objects.filter(device=d1).count() == 2
