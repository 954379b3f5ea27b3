from __future__ import annotations

import json
from pathlib import Path

from pool.models import Delivery, Message
from pool.selectors import POOL_EXPORT_COLUMNS, pool_export_rows
from pool.services import ImportReport, pool_import_jsonl, response_create, task_create


def test_export_rows_one_per_task_and_device(make_device, master, admin):
    d1, d2 = make_device("a"), make_device("b")
    task = task_create(user=master, to=f"device:[{d1.pk},{d2.pk}]", title="reboot")
    response_create(device=d1, parent_id=task.msg_id, status="done", body="ok")
    task_create(user=admin, to=f"device:{d2.pk}", title="other")

    rows = list(pool_export_rows(user=master, everything=False))
    assert [r["device_id"] for r in rows] == [d1.pk, d2.pk]
    assert all(set(r) == set(POOL_EXPORT_COLUMNS) for r in rows)
    assert rows[0]["state"] == "done" and rows[1]["state"] == "pending"
    assert json.loads(rows[0]["responses"])[0]["body"] == "ok"
    json.dumps(rows)  # JSON-serialisable

    assert len(list(pool_export_rows(user=master, everything=True))) == 3


def test_import_contract_counts_and_bad_lines(tmp_path: Path, make_device):
    d1 = make_device("a")
    good = {
        "id": "msg_" + "a" * 32,
        "ts": "2026-06-03T12:34:56Z",
        "from": "user:boss@example.com",
        "to": f"device:{d1.pk}",
        "type": "task",
        "title": "t",
        "body": "",
        "parent_id": None,
        "meta": {},
    }
    answer = {
        **good,
        "id": "msg_" + "b" * 32,
        "from": f"device:{d1.pk}",
        "to": "user:boss@example.com",
        "type": "response",
        "parent_id": good["id"],
        "meta": {"status": "done"},
    }
    path = tmp_path / "2026-06-03.jsonl"
    path.write_text(
        json.dumps(good) + "\n{not json\n" + json.dumps(answer) + "\n" + json.dumps({**good, "to": "nobody"}) + "\n"
    )

    report = pool_import_jsonl(path=path)
    assert isinstance(report, ImportReport)
    assert (report.created, report.skipped) == (2, 0)
    assert [e["line"] for e in report.errors] == [2, 4]
    assert all(e["file"] == str(path) for e in report.errors)
    assert Delivery.objects.get(task__msg_id=good["id"]).state == "done"

    again = pool_import_jsonl(path=path)
    assert (again.created, again.skipped) == (0, 2)
    assert Message.objects.count() == 2


def test_imported_tasks_get_an_honest_state(tmp_path: Path, make_device):
    d1, d2 = make_device("a"), make_device("b")

    def task(key: str, **extra):
        return {
            "id": "msg_" + key * 32,
            "ts": "2026-06-03T12:00:00Z",
            "from": "user:boss@example.com",
            "to": f"device:[{d1.pk},{d2.pk}]",
            "type": "task",
            "title": "t",
            "body": "",
            "parent_id": None,
            "meta": {},
            **extra,
        }

    def done(key: str, parent: dict, device) -> dict:
        return {
            **parent,
            "id": "msg_" + key * 32,
            "from": f"device:{device.pk}",
            "to": "user:boss@example.com",
            "type": "response",
            "parent_id": parent["id"],
            "meta": {"status": "done"},
        }

    answered = task("a")
    expired = task("b", meta={"expires_at": "2026-06-03T13:00:00Z"})
    open_one = task("c")
    lines = [answered, expired, open_one, done("d", answered, d1), done("e", answered, d2), done("f", expired, d1)]
    path = tmp_path / "2026-06-03.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert pool_import_jsonl(path=path).created == 6

    def state(line: dict) -> tuple[str, list[str]]:
        found = Message.objects.get(msg_id=line["id"])
        rows = Delivery.objects.filter(task=found).order_by("device_id").values_list("state", flat=True)
        return found.state, list(rows)

    assert state(answered) == ("completed", ["done", "done"])
    assert state(expired) == ("completed", ["done", "timed_out"])  # it ended when it expired
    assert state(open_one) == ("in_progress", ["pending", "pending"])
