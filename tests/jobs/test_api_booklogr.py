"""BookLogr `/v1` dialect: status codes and bodies, ownership, retry, files, upload."""

from __future__ import annotations

from pathlib import Path

import pytest
from django_q.models import OrmQ

from jobs.models import Job, JobFile
from jobs.services import job_create, job_execute

pytestmark = pytest.mark.django_db


def test_create_returns_202_with_the_id_and_queues_after_commit(user, client_for, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(user).post("/v1/tasks", {"type": "csv_export", "data": {}}, format="json")
    assert response.status_code == 202
    body = response.json()
    assert body == {"message": "Task created.", "task_id": body["task_id"]}
    job = Job.objects.get(pk=body["task_id"])
    assert (job.type, job.status, job.created_by_id, job.data) == ("csv_export", "fresh", user.pk, {})
    assert OrmQ.objects.count() == 1  # queued, not run inside the request


@pytest.mark.parametrize(
    ("payload", "missing"),
    [({}, ["type", "data"]), ({"type": "csv_export"}, ["data"]), ({"data": {}}, ["type"]), ([1, 2], ["type", "data"])],
)
def test_create_missing_keys_is_400_with_the_missing_list(user, client_for, payload, missing):
    response = client_for(user).post("/v1/tasks", payload, format="json")
    assert response.status_code == 400
    assert response.json() == {
        "status": "error",
        "message": "Request JSON is missing some required params",
        "missing": missing,
    }


def test_create_unknown_type_is_422(user, client_for):
    response = client_for(user).post("/v1/tasks", {"type": "share_book_event", "data": {}}, format="json")
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "Invalid type"
    assert body["message"].startswith("The supplied task type is invalid. It can be either ")
    assert "csv_export" in body["message"]
    assert not Job.objects.exists()


def test_create_with_bad_arguments_or_malformed_json_is_400(user, client_for):
    client = client_for(user)
    response = client.post("/v1/tasks", {"type": "test.main.add", "data": {"x": 1, "y": 2**80}}, format="json")
    assert response.status_code == 400 and response.json()["error"] == "Invalid data"
    response = client.post("/v1/tasks", {"type": "test.main.add", "data": "x=1"}, format="json")
    assert response.status_code == 400
    response = client.post("/v1/tasks", "{not json", content_type="application/json")
    assert response.status_code == 400 and response.json()["error"] == "Bad request"
    # BookLogr is lenient about ints for floats (pytasks is not)
    response = client.post("/v1/tasks", {"type": "test.main.hypot", "data": {"x": 3, "y": 4}}, format="json")
    assert response.status_code == 202
    assert not Job.objects.exclude(type="test.main.hypot").exists()


def test_protected_type_refused_for_plain_users(user, admin, client_for):
    response = client_for(user).post(
        "/v1/tasks", {"type": "test.main.myProtectedTask", "data": {"x": 1, "y": 2}}, format="json"
    )
    assert response.status_code == 403 and response.json()["error"] == "Forbidden"
    response = client_for(admin).post(
        "/v1/tasks", {"type": "test.main.myProtectedTask", "data": {"x": 1, "y": 2}}, format="json"
    )
    assert response.status_code == 202


def test_jwt_errors_are_flask_jwt_extended_shaped(anon_client):
    response = anon_client.post("/v1/tasks", {"type": "csv_export", "data": {}}, format="json")
    assert response.status_code == 401 and response.json() == {"msg": "Missing Authorization Header"}
    anon_client.credentials(HTTP_AUTHORIZATION="Bearer not.a.token")
    response = anon_client.get("/v1/files")
    assert response.status_code == 401 and set(response.json()) == {"msg"}


def test_get_task_is_the_whole_record_for_its_owner_only(user, master, admin, client_for):
    job = job_create(type="test.main.add", data={"x": 1, "y": 2}, user=user)
    job_execute(job_id=job.pk)
    response = client_for(user).get(f"/v1/tasks/{job.pk}")
    assert response.status_code == 200
    body = response.json()
    for key in (
        "id",
        "type",
        "data",
        "status",
        "worker",
        "created_on",
        "updated_on",
        "created_by",
        "attempts",
        "result",
        "error",
        "progress",
        "started_at",
        "finished_at",
    ):
        assert key in body
    assert (body["status"], body["result"], body["data"], body["created_by"]) == (
        "success",
        3,
        {"x": 1, "y": 2},
        user.pk,
    )
    assert body["worker"]
    other = client_for(master).get(f"/v1/tasks/{job.pk}")
    assert other.status_code == 404 and other.json() == {"error": "Not found", "message": "No task found"}
    assert client_for(admin).get(f"/v1/tasks/{job.pk}").status_code == 200
    assert client_for(user).get("/v1/tasks/999999").status_code == 404


def test_retry_only_a_failure_and_only_the_owners(user, master, client_for, django_capture_on_commit_callbacks):
    job = job_create(type="tests.fail", data={"message": "x"}, user=user)
    client = client_for(user)
    response = client.post(f"/v1/tasks/{job.pk}/retry")
    assert response.status_code == 409 and response.json()["error"] == "Conflict"
    job_execute(job_id=job.pk)
    assert client_for(master).post(f"/v1/tasks/{job.pk}/retry").status_code == 404
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/v1/tasks/{job.pk}/retry")
    assert response.status_code == 200 and response.json() == {"message": "Task set to be retried."}
    job.refresh_from_db()
    assert job.status == "fresh"  # queued again, not run inside the request
    assert client.post(f"/v1/tasks/{job.pk}/retry").status_code == 409


def _export(user, fmt="csv"):
    job = job_create(type=f"{fmt}_export", data={"datasets": ["jobs"]}, user=user)
    assert job_execute(job_id=job.pk) == "success"
    job.refresh_from_db()
    return job.result["filename"]


def test_files_list_newest_first_and_404_when_none(user, master, client_for):
    client = client_for(user)
    response = client.get("/v1/files")
    assert response.status_code == 404 and response.json() == {"error": "Not found", "message": "No files found"}
    first, second = _export(user), _export(user, "json")
    _export(master)
    response = client.get("/v1/files")
    assert response.status_code == 200
    assert [row["filename"] for row in response.json()] == [second, first]
    assert set(response.json()[0]) >= {"id", "filename", "created_at"}


def test_download_for_the_owner_only(user, master, admin, client_for, export_root: Path):
    name = _export(user)
    response = client_for(user).get(f"/v1/files/{name}")
    assert response.status_code == 200
    assert response["Content-Disposition"] == f'attachment; filename="{name}"'
    assert b"".join(response.streaming_content).startswith(b"dataset,")
    for other in (master, admin):
        response = client_for(other).get(f"/v1/files/{name}")
        assert response.status_code == 404 and response.json() == {"error": "Not found", "message": "No file found"}


@pytest.mark.parametrize("name", ["..%2F..%2Fsecret_key", "%2Fetc%2Fpasswd", "..", "export_x.csv%00"])
def test_download_path_tricks_are_404(user, client_for, export_root: Path, name):
    (export_root.parent / "secret_key").write_text("s3cret")
    response = client_for(user).get(f"/v1/files/{name}")
    assert response.status_code == 404
    assert b"s3cret" not in response.content


def test_download_of_a_row_whose_file_is_gone_is_404(user, client_for, export_root: Path):
    name = _export(user)
    (export_root / name).unlink()
    assert client_for(user).get(f"/v1/files/{name}").status_code == 404


def test_upload_creates_an_import_job(master, user, client_for, export_root: Path, django_capture_on_commit_callbacks):
    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile("2026-06-03.jsonl", b'{"id": "x"}\n', content_type="application/x-ndjson")
    response = client_for(user).post("/v1/files", {"file": upload}, format="multipart")
    assert response.status_code == 403  # jsonl_import is for masters and admins
    assert not JobFile.objects.exists()
    upload.seek(0)
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(master).post("/v1/files", {"file": upload, "type": "jsonl"}, format="multipart")
    assert response.status_code == 202
    body = response.json()
    job = Job.objects.get(pk=body["task_id"])
    assert job.type == "jsonl_import" and job.data == {"filename": body["filename"]}
    stored = JobFile.objects.get(filename=body["filename"])
    assert stored.uploaded and stored.owner == master
    assert (export_root / stored.filename).read_bytes() == b'{"id": "x"}\n'
    assert client_for(master).post("/v1/files", {}, format="multipart").status_code == 422
    upload.seek(0)
    response = client_for(master).post("/v1/files", {"file": upload, "type": "goodreads"}, format="multipart")
    assert response.status_code == 400


def test_ids_beyond_64_bits_are_404_not_500(user, client_for):
    huge = 2**70
    assert client_for(user).get(f"/v1/tasks/{huge}").status_code == 404
    assert client_for(user).post(f"/v1/tasks/{huge}/retry").status_code == 404


def test_an_upload_is_refused_before_it_is_read_or_stored(
    master, user, client_for, export_root: Path, settings, monkeypatch
):
    """A caller who may not import, or a file over the limit, never gets its body written to disk:
    the permission and the declared size come first, and a body that streams past the limit is cut
    off at the limit."""
    from django.core.files import uploadhandler
    from django.core.files.uploadedfile import SimpleUploadedFile

    written: list[int] = []
    real_receive = uploadhandler.TemporaryFileUploadHandler.receive_data_chunk

    def counting(self, raw_data, start):
        written.append(len(raw_data))
        return real_receive(self, raw_data, start)

    monkeypatch.setattr(uploadhandler.TemporaryFileUploadHandler, "receive_data_chunk", counting)
    monkeypatch.setattr(uploadhandler.MemoryFileUploadHandler, "receive_data_chunk", counting)
    big = b'{"id": "x"}\n' * 20_000  # 240 KB
    response = client_for(user).post("/v1/files", {"file": SimpleUploadedFile("a.jsonl", big)}, format="multipart")
    assert response.status_code == 403 and written == []
    settings.JOBS_UPLOAD_MAX_BYTES = 1000
    response = client_for(master).post("/v1/files", {"file": SimpleUploadedFile("a.jsonl", big)}, format="multipart")
    assert response.status_code == 413 and written == []  # refused on its declared length
    settings.JOBS_UPLOAD_MAX_BYTES = 200_000  # the declared length passes; the stream is cut at the limit
    response = client_for(master).post("/v1/files", {"file": SimpleUploadedFile("a.jsonl", big)}, format="multipart")
    assert response.status_code == 413 and 0 < sum(written) <= 200_000
    assert not JobFile.objects.exists() and not list(export_root.iterdir())


def test_a_delayed_task_stays_fresh_with_its_time_shown(user, client_for, django_capture_on_commit_callbacks):
    client = client_for(user)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/v1/tasks", {"type": "csv_export", "data": {}, "delay_seconds": 90}, format="json")
    assert response.status_code == 202
    record = client.get(f"/v1/tasks/{response.json()['task_id']}").json()
    assert record["status"] == "fresh" and record["run_after"] is not None
    assert OrmQ.objects.count() == 0  # queued by a broker at its time, not now
    response = client.post(
        "/v1/tasks", {"type": "csv_export", "data": {}, "run_after": "2027-06-30T23:59:00+01:00"}, format="json"
    )
    assert client.get(f"/v1/tasks/{response.json()['task_id']}").json()["run_after"].startswith("2027-06-30T22:59")


@pytest.mark.parametrize(
    "options",
    [
        {"delay_seconds": -1},
        {"delay_seconds": True},
        {"delay_seconds": "10"},
        {"delay_seconds": 10**12},
        {"run_after": "tomorrow"},
        {"run_after": "2030-02-30T10:00:00Z"},
        {"run_after": "2030-01-01T10:00:00"},
        {"run_after": "9999-01-01T10:00:00Z"},
        {"run_after": "0001-01-01T00:00:00+14:00"},  # before the first UTC time there is (was a 500)
        {"run_after": "2030-01-01T10:00:00Z", "delay_seconds": 5},
        {"unique_key": ""},
        {"unique_key": 7},
        {"unique_key": "a\x00b"},
        {"unique_key": "k" * 201},
    ],
)
def test_bad_delays_and_unique_keys_are_400_and_create_nothing(user, client_for, options):
    response = client_for(user).post("/v1/tasks", {"type": "csv_export", "data": {}, **options}, format="json")
    assert response.status_code == 400 and response.json()["error"] == "Bad request"
    assert not Job.objects.exists()


def test_a_unique_key_returns_the_callers_active_task_with_200(user, master, client_for):
    payload = {"type": "csv_export", "data": {}, "unique_key": "nightly"}
    first = client_for(user).post("/v1/tasks", payload, format="json")
    again = client_for(user).post("/v1/tasks", payload, format="json")
    assert first.status_code == 202 and again.status_code == 200
    assert again.json() == {"message": "Task exists.", "task_id": first.json()["task_id"], "existing": True}
    assert again["Job-Existing"] == "true"
    # Another caller's key is another key: it never answers with (or reveals) someone else's job.
    theirs = client_for(master).post("/v1/tasks", payload, format="json")
    assert theirs.status_code == 202 and theirs.json()["task_id"] != first.json()["task_id"]
    assert Job.objects.count() == 2


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_concurrent_submissions_with_one_unique_key_create_one_task(live_server_url, user):
    """8 submissions with one key at once to 2 granian workers (real processes): one task, and
    every answer names it (the partial unique index decides, not a check-then-insert)."""
    import threading

    import requests

    from tests.conftest import access_token_for

    headers = {"Authorization": f"Bearer {access_token_for(user)}"}
    answers: list[requests.Response] = []
    start = threading.Barrier(8)

    def send() -> None:
        start.wait()
        payload = {"type": "csv_export", "data": {}, "unique_key": "once"}
        answers.append(requests.post(f"{live_server_url}/v1/tasks", json=payload, headers=headers, timeout=30))

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answer.status_code for answer in answers) == [200] * 7 + [202], [a.content for a in answers]
    assert len({answer.json()["task_id"] for answer in answers}) == 1
    assert Job.objects.filter(type="csv_export").count() == 1


def test_list_shows_the_callers_tasks_filtered_and_paginated_admins_see_all(user, master, admin, client_for):
    mine = [job_create(type="test.main.add", data={"x": i, "y": 1}, user=user) for i in range(3)]
    job_execute(job_id=mine[0].pk)
    keyed = job_create(type="csv_export", data={}, user=user, unique_key=f"{user.pk}/nightly")
    theirs = job_create(type="test.main.add", data={"x": 1, "y": 1}, user=master)
    client = client_for(user)
    body = client.get("/v1/tasks").json()
    assert body["count"] == 4 and [row["id"] for row in body["results"]] == [keyed.pk, *[j.pk for j in mine][::-1]]
    assert client.get("/v1/tasks?status=success").json()["results"][0]["id"] == mine[0].pk
    assert client.get("/v1/tasks?type=csv_export").json()["count"] == 1
    assert [r["id"] for r in client.get("/v1/tasks?unique_key=nightly").json()["results"]] == [keyed.pk]
    assert (
        client.get("/v1/tasks?created_after=2000-01-01T00:00:00Z&created_before=2001-01-01T00:00:00Z").json()["count"]
        == 0
    )
    page = client.get("/v1/tasks?page_size=2&page=2").json()
    assert [row["id"] for row in page["results"]] == [mine[1].pk, mine[0].pk] and page["next"] is None
    everyone = client_for(admin).get("/v1/tasks").json()
    assert {row["id"] for row in everyone["results"]} >= {theirs.pk, keyed.pk}


@pytest.mark.parametrize(
    "query", ["status=done", "created_after=yesterday", "page=0", "page_size=501", "type=a%00b", "page=abc"]
)
def test_list_refuses_bad_filters_with_the_envelope(user, client_for, query):
    response = client_for(user).get(f"/v1/tasks?{query}")
    assert response.status_code == 400 and response.json()["code"] == "validation_error"


def test_list_cancel_and_rerun_need_a_platform_user(anon_client):
    job = job_create(type="test.main.add", data={"x": 1, "y": 1}, user=None)
    for method, path in [
        ("get", "/v1/tasks"),
        ("post", f"/v1/tasks/{job.pk}/cancel"),
        ("post", f"/v1/tasks/{job.pk}/rerun"),
    ]:
        response = getattr(anon_client, method)(path)
        assert response.status_code == 401 and response.json()["code"] == "not_authenticated"


def test_cancel_own_or_as_admin_never_anothers_and_409_when_final(user, master, admin, client_for):
    fresh = job_create(type="test.main.add", data={"x": 1, "y": 1}, user=user)
    started = job_create(type="test.main.add", data={"x": 1, "y": 1}, user=user)
    Job.objects.filter(pk=started.pk).update(status="started", worker="w")
    attacker = client_for(master)
    response = attacker.post(f"/v1/tasks/{fresh.pk}/cancel")
    assert response.status_code == 404 and response.json()["code"] == "job_not_found"
    assert Job.objects.get(pk=fresh.pk).status == "fresh"
    response = client_for(user).post(f"/v1/tasks/{fresh.pk}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "failure"
    response = client_for(admin).post(f"/v1/tasks/{started.pk}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "started"
    assert Job.objects.get(pk=started.pk).cancel_requested  # stops at its next progress report
    again = client_for(user).post(f"/v1/tasks/{fresh.pk}/cancel")
    assert again.status_code == 409 and again.json()["code"] == "job_state_conflict"
    assert client_for(user).post("/v1/tasks/99999999999999999999/cancel").status_code == 404


def test_rerun_runs_a_task_again_linked_to_it_with_the_same_or_new_arguments(user, master, admin, client_for):
    job = job_create(type="test.main.add", data={"x": 2, "y": 3}, user=user)
    job_execute(job_id=job.pk)
    client = client_for(user)
    same = client.post(f"/v1/tasks/{job.pk}/rerun")
    assert same.status_code == 201
    assert (same.json()["rerun_of"], same.json()["data"], same.json()["status"]) == (job.pk, {"x": 2, "y": 3}, "fresh")
    new = client.post(f"/v1/tasks/{job.pk}/rerun", {"data": {"x": 10, "y": 1}}, format="json")
    assert new.status_code == 201 and new.json()["data"] == {"x": 10, "y": 1}
    assert job_execute(job_id=new.json()["id"]) == "success" and Job.objects.get(pk=new.json()["id"]).result == 11
    bad = client.post(f"/v1/tasks/{job.pk}/rerun", {"data": {"x": "ten"}}, format="json")
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_job_arguments"
    assert client.post(f"/v1/tasks/{job.pk}/rerun", [1], format="json").json()["code"] == "validation_error"
    # Another user cannot rerun it (nor learn it exists); an admin's rerun stays the owner's job.
    assert client_for(master).post(f"/v1/tasks/{job.pk}/rerun").status_code == 404
    by_admin = client_for(admin).post(f"/v1/tasks/{job.pk}/rerun").json()
    assert by_admin["created_by"] == user.pk and by_admin["rerun_of"] == job.pk
    assert Job.objects.filter(rerun_of=job).count() == 3


def test_rerun_of_a_protected_type_needs_the_right_now(user, admin, client_for):
    job = job_create(type="test.main.myProtectedTask", data={"x": 2, "y": 3}, user=admin)
    Job.objects.filter(pk=job.pk).update(created_by=user)  # granted once, no longer
    response = client_for(user).post(f"/v1/tasks/{job.pk}/rerun")
    assert response.status_code == 403 and response.json()["code"] == "job_not_allowed"
    assert not Job.objects.filter(rerun_of=job).exists()
