from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command

from pool.models import Delivery, Device, Message
from pool.services import pool_import_jsonl
from pool.wire import message_to_wire
from tests.pool.conftest import device_client


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


@pytest.mark.slow
def test_lines_are_written_whole_by_concurrent_processes(journal: Path):
    """Many processes appending long lines (> PIPE_BUF) to one day file never interleave."""
    script = (
        "import os, sys; sys.path.insert(0, os.getcwd());"
        "import django; os.environ['DJANGO_SETTINGS_MODULE']='coordinator.settings'; django.setup();"
        "from django.conf import settings; settings.POOL_JOURNAL_DIR=sys.argv[1];"
        "from django.utils import timezone; from pool.models import Message; from pool.services import journal_append;"
        "ms=[Message(ts=timezone.now(), sender='backend', to='device:*', type='info', body=sys.argv[2]*9000, meta={})"
        " for _ in range(50)]; journal_append(ms)"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(journal), c], cwd=Path(__file__).resolve().parents[2])
        for c in "abcd"
    ]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    (path,) = journal.glob("*.jsonl")
    lines = path.read_bytes().splitlines()
    assert len(lines) == 200
    for line in lines:
        body = json.loads(line)["body"]
        assert len(body) == 9000 and len(set(body)) == 1


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
