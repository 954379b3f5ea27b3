"""Beyond the seed: auth, ownership, leases, out-of-order hand-out, batch, bad input."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from coordinator.models import Role, User
from farm.models import Run, Task, Worker
from tests.factories import UserFactory
from tests.farm.conftest import basic

pytestmark = pytest.mark.django_db


def new_run(api: APIClient, n: int = 10) -> str:
    response = api.post("/api/run", {"numTasks": n}, format="json")
    assert response.status_code == 201
    return str(response.json()["uuid"])


def new_worker(api: APIClient, uuid: str) -> None:
    response = api.post("/api/worker", {"uuid": uuid, "hostname": "h", "pid": 7}, format="json")
    assert response.status_code == 201


def claim(api: APIClient, run: str, worker: str) -> Any:
    return api.post(f"/api/runs/{run}/task", {"worker_uuid": worker}, format="json")


def test_unauthenticated_gets_basic_challenge(anon_client: APIClient) -> None:
    response = anon_client.get("/api/runs")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Basic realm="Authentication Required"'


@pytest.mark.parametrize("header", [basic("test@example.com", "wrong"), basic("a.b.c", ""), "Basic !!!"])
def test_bad_credentials_are_401(farm_user: User, header: str) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get("/api/token")
    assert response.status_code == 401
    assert response.json()["code"] == "authentication_failed"


def test_token_is_revoked_by_password_change(farm_user: User, api: APIClient) -> None:
    assert api.get("/api/runs").status_code == 200
    farm_user.set_password("another-password-1")
    farm_user.save()
    assert api.get("/api/runs").status_code == 401


def test_platform_jwt_is_accepted(farm_user: User, client_for: Callable[[User], APIClient]) -> None:
    assert client_for(farm_user).get("/api/runs").status_code == 200


def test_runs_belong_to_their_owner(
    farm_user: User, api: APIClient, token_client_for: Callable[[User], APIClient]
) -> None:
    run = new_run(api)
    other = token_client_for(UserFactory(role=Role.USER))
    assert other.get("/api/runs").json() == {"data": []}
    assert other.get(f"/api/runs/{run}").status_code == 404
    assert other.delete(f"/api/runs/{run}").status_code == 404
    assert other.put(f"/api/runs/{run}/tasks/0", {"status": "done"}, format="json").status_code == 404
    boss = token_client_for(UserFactory(role=Role.ADMIN))
    assert [r["uuid"] for r in boss.get("/api/runs").json()["data"]] == [run]
    assert boss.get(f"/api/runs/{run}").status_code == 200


def test_worker_of_another_user_cannot_claim(api: APIClient, token_client_for: Callable[[User], APIClient]) -> None:
    other = token_client_for(UserFactory(role=Role.USER))
    new_worker(other, "foreign")
    run = new_run(api)
    assert claim(api, run, "foreign").status_code == 404


def test_claim_says_which_of_worker_and_run_is_missing(
    api: APIClient, token_client_for: Callable[[User], APIClient]
) -> None:
    run = new_run(api, 2)
    new_worker(api, "mine")
    for path, body in (
        (f"/api/runs/{run}/task", {}),
        (f"/api/runs/{run}/tasks/claim", {"count": 2}),
        (f"/api/runs/{run}/tasks/done", {"tasks": [0]}),
    ):
        missing_worker = api.post(path, {"worker_uuid": "nobody", **body}, format="json")
        assert (missing_worker.status_code, missing_worker.json()["code"]) == (404, "worker_not_found")
        missing_run = api.post(path.replace(run, "f" * 32), {"worker_uuid": "mine", **body}, format="json")
        assert (missing_run.status_code, missing_run.json()["code"]) == (404, "run_not_found")
    # An admin may hand out another user's run to the admin's own worker.
    boss = token_client_for(UserFactory(role=Role.ADMIN))
    new_worker(boss, "boss")
    assert claim(boss, run, "boss").status_code == 201


def test_duplicate_worker_uuid_is_409(api: APIClient) -> None:
    new_worker(api, "w1")
    response = api.post("/api/worker", {"uuid": "w1", "hostname": "h", "pid": 1}, format="json")
    assert response.status_code == 409
    assert response.json()["code"] == "worker_exists"


def test_fresh_run_reports_not_started(api: APIClient) -> None:
    run = new_run(api, 10_000_000)
    body = api.get(f"/api/runs/{run}").json()
    assert body["numNotStarted"] == 10_000_000 and body["numWaiting"] == 0
    assert Task.objects.count() == 0  # nothing materialised up front


def test_out_of_order_tasks_do_not_break_hand_out(api: APIClient) -> None:
    run = new_run(api, 5)
    new_worker(api, "w")
    assert api.get(f"/api/runs/{run}/tasks/3").status_code == 200  # materialises 3 as waiting
    assert api.put(f"/api/runs/{run}/tasks/1", {"status": "done"}, format="json").status_code == 204
    handed = []
    while (response := claim(api, run, "w")).status_code == 201:
        handed.append(response.json()["task"])
    assert response.status_code == 204
    assert sorted(handed) == [0, 2, 3, 4]  # 1 is done, every other number exactly once
    assert handed[0] == 3  # waiting rows first


def test_expired_lease_is_handed_out_again_and_late_update_refused(
    api: APIClient, settings: Any, farm_user: User, token_client_for: Callable[[User], APIClient]
) -> None:
    """Each worker is named by the cookie it is given on registration (`farm.api.identity`)."""
    settings.FARM_LEASE_SECONDS = 60
    run = new_run(api, 1)
    late, taker = token_client_for(farm_user), token_client_for(farm_user)
    new_worker(late, "a")
    new_worker(taker, "b")
    assert late.cookies["farm_worker"].value == "a" and taker.cookies["farm_worker"].value == "b"
    assert claim(late, run, "a").json()["task"] == 0
    assert claim(taker, run, "b").status_code == 204  # still leased
    Task.objects.update(updated=timezone.now() - timedelta(seconds=61))
    assert claim(taker, run, "b").json()["task"] == 0  # lease expired: handed out again
    refused = late.put(f"/api/runs/{run}/tasks/0", {"percentCompleted": 100}, format="json")
    assert refused.status_code == 409
    assert refused.json()["code"] == "lease_lost"
    assert taker.put(f"/api/runs/{run}/tasks/0", {"percentCompleted": 100}, format="json").status_code == 204
    task = Task.objects.get()
    assert task.worker is not None and task.worker.uuid == "b" and task.percent_completed == 100
    assert task.attempts == 2


def test_requests_that_name_no_worker_update_as_in_the_seed(api: APIClient) -> None:
    """A script running two workers on one token and keeping no cookies: neither is named, so each
    one's updates are applied as the original applies them (no lease check), not refused."""
    run = new_run(api, 2)
    new_worker(api, "a")
    new_worker(api, "b")
    api.cookies.clear()
    assert claim(api, run, "a").json()["task"] == 0
    api.cookies.clear()
    assert claim(api, run, "b").json()["task"] == 1
    api.cookies.clear()
    assert api.put(f"/api/runs/{run}/tasks/1", {"percentCompleted": 30}, format="json").status_code == 204
    assert api.put(f"/api/runs/{run}/tasks/0", {"percentCompleted": 60}, format="json").status_code == 204
    assert [t.percent_completed for t in Task.objects.order_by("task")] == [60, 30]


def test_the_worker_header_comes_before_the_cookie(api: APIClient) -> None:
    run = new_run(api, 1)
    new_worker(api, "a")
    claim(api, run, "a")
    other = api.put(
        f"/api/runs/{run}/tasks/0", {"percentCompleted": 5}, format="json", headers={"X-Farm-Worker": "someone-else"}
    )
    assert other.status_code == 409 and other.json()["code"] == "lease_lost"
    assert api.put(f"/api/runs/{run}/tasks/0", {"percentCompleted": 5}, format="json").status_code == 204


def test_tokens_are_distinct_and_foreign_or_old_ones_are_refused(farm_user: User) -> None:
    """Every token has its own id; a token of another kind, or one signed the way the farm once
    signed its own (a key derived from the secret, no token_type), is a 401."""
    import hashlib

    import jwt
    from django.conf import settings

    from coordinator.tokens import TokenKind, credential_stamp, token_issue
    from farm.authentication import farm_token_for

    assert farm_token_for(farm_user) != farm_token_for(farm_user)
    old_key = hashlib.sha256(b"coordinator.farm.token:" + settings.SECRET_KEY.encode()).digest()
    old = jwt.encode({"typ": "farm", "uid": farm_user.pk, "jti": "0" * 16}, old_key, algorithm="HS256")
    device = token_issue(TokenKind.DEVICE, {"uid": farm_user.pk, "stamp": credential_stamp(farm_user), "jti": "0" * 16})
    for token in (old, device):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=basic(token, ""))
        answer = client.get("/api/runs")
        assert answer.status_code == 401, token
        assert answer["WWW-Authenticate"] == 'Basic realm="Authentication Required"'


def test_a_farm_token_stops_working_when_its_user_changes(farm_user: User) -> None:
    from farm.authentication import farm_token_for

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=basic(farm_token_for(farm_user), ""))
    assert client.get("/api/runs").status_code == 200
    farm_user.set_password("another-password-42")
    farm_user.save()
    assert client.get("/api/runs").status_code == 401
    client.credentials(HTTP_AUTHORIZATION=basic(farm_token_for(farm_user), ""))
    assert client.get("/api/runs").status_code == 200
    User.objects.filter(pk=farm_user.pk).update(is_active=False)
    assert client.get("/api/runs").status_code == 401


def test_update_renews_lease_and_worker_last_seen(api: APIClient, settings: Any) -> None:
    settings.FARM_LEASE_SECONDS = 60
    run = new_run(api, 1)
    new_worker(api, "a")
    claim(api, run, "a")
    past = timezone.now() - timedelta(seconds=61)
    Task.objects.update(updated=past)
    Worker.objects.update(last_seen=past)
    assert api.put(f"/api/runs/{run}/tasks/0", {"percentCompleted": 10}, format="json").status_code == 204
    assert Worker.objects.get().last_seen > past
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=api._credentials["HTTP_AUTHORIZATION"])
    new_worker(other, "b")
    assert claim(other, run, "b").status_code == 204  # the update kept the lease


def test_batch_claim_and_done(api: APIClient) -> None:
    run = new_run(api, 250)
    new_worker(api, "w")
    first = api.post(f"/api/runs/{run}/tasks/claim", {"worker_uuid": "w", "count": 100}, format="json")
    assert first.status_code == 200
    numbers = [t["task"] for t in first.json()["tasks"]]
    assert numbers == list(range(100))
    done = api.post(f"/api/runs/{run}/tasks/done", {"worker_uuid": "w", "tasks": [*numbers, 200]}, format="json")
    assert done.status_code == 200
    assert done.json() == {"done": numbers, "refused": [200]}
    rest = []
    while batch := api.post(f"/api/runs/{run}/tasks/claim", {"worker_uuid": "w", "count": 100}, format="json").json()[
        "tasks"
    ]:
        rest += [t["task"] for t in batch]
    assert rest == list(range(100, 250))
    body = api.get(f"/api/runs/{run}").json()
    assert (body["numDone"], body["numComputing"], body["numNotStarted"]) == (100, 150, 0)
    assert body["percentDone"] == pytest.approx(100 * 100 / 250)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/api/run", {"numTasks": "many"}),
        ("post", "/api/run", {"numTasks": 2**70}),
        ("post", "/api/run", {"numTasks": -1}),
        ("post", "/api/run", ["not", "an", "object"]),
        ("post", "/api/worker", {"uuid": "x", "hostname": "h", "pid": 2**64}),
        ("post", "/api/worker", {"uuid": "x"}),
        ("put", "/api/runs/{run}/tasks/0", {"percentCompleted": 101}),
        ("put", "/api/runs/{run}/tasks/0", {"percentCompleted": "half"}),
        ("put", "/api/runs/{run}/tasks/0", []),
        ("post", "/api/runs/{run}/task", {}),
        ("post", "/api/runs/{run}/tasks/claim", {"worker_uuid": "w", "count": 0}),
        ("post", "/api/runs/{run}/tasks/done", {"worker_uuid": "w", "tasks": [2**70]}),
        ("post", "/api/runs/{run}/task", {"worker_uuid": 5}),
        ("post", "/api/worker", {"uuid": "a;b", "hostname": "h", "pid": 1}),
        ("post", "/api/worker", {"uuid": "x", "hostname": "h\u0000", "pid": 1}),
        ("post", "/api/worker", {"uuid": "x", "hostname": "h", "pid": "1"}),
        ("put", "/api/runs/{run}/tasks/0", {"percentCompleted": False}),
        ("post", "/api/run", {"numTasks": True}),
    ],
)
def test_bad_input_is_400_and_writes_nothing(api: APIClient, method: str, path: str, body: Any) -> None:
    run = new_run(api, 3)
    before = (Run.objects.count(), Worker.objects.count(), Task.objects.count())
    response = getattr(api, method)(path.format(run=run), body, format="json")
    assert response.status_code == 400
    assert response.json()["code"] in {"validation_error", "empty_update"}
    assert (Run.objects.count(), Worker.objects.count(), Task.objects.count()) == before


def test_malformed_json_and_huge_task_number(api: APIClient) -> None:
    run = new_run(api, 3)
    response = api.generic("PUT", f"/api/runs/{run}/tasks/0", "{bad json", content_type="application/json")
    assert response.status_code == 400
    assert api.get(f"/api/runs/{run}/tasks/{2**80}").status_code == 404
    assert api.put(f"/api/runs/{run}/tasks/0", "x", content_type="text/plain").status_code == 415


def test_progress_events(api: APIClient, farm_user: User, monkeypatch: Any, settings: Any) -> None:
    settings.FARM_PROGRESS_INTERVAL = 0
    events: list[dict[str, Any]] = []
    monkeypatch.setattr("farm.services.progress_publish", lambda **kw: events.append(kw))
    run = new_run(api, 2)
    new_worker(api, "w")
    for _ in range(2):
        n = claim(api, run, "w").json()["task"]
        api.put(f"/api/runs/{run}/tasks/{n}", {"percentCompleted": 100}, format="json")
        api.put(f"/api/runs/{run}/tasks/{n}", {"status": "done"}, format="json")
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "new" and events[0]["text"] == f"run {run} (2 tasks)"
    assert kinds[-1] == "end" and kinds.count("end") == 1
    assert {e["topic"] for e in events} == {f"run:{run}"}
    assert {e["owner_id"] for e in events} == {farm_user.pk}
    last_msg = [e for e in events if e["kind"] == "msg"][-1]
    assert last_msg["state"] == {
        "percentDone": 100.0,
        "numWaiting": 0,
        "numComputing": 0,
        "numDone": 2,
        "numNotStarted": 0,
        "numFailed": 0,
        "numTasks": 2,
    }


def test_progress_messages_are_throttled_but_the_end_is_not(api: APIClient, monkeypatch: Any, settings: Any) -> None:
    settings.FARM_PROGRESS_INTERVAL = 3600
    events: list[dict[str, Any]] = []
    monkeypatch.setattr("farm.services.progress_publish", lambda **kw: events.append(kw))
    run = new_run(api, 3)
    new_worker(api, "w")
    for _ in range(3):
        n = claim(api, run, "w").json()["task"]
        api.put(f"/api/runs/{run}/tasks/{n}", {"status": "done", "percentCompleted": 100}, format="json")
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "new" and kinds[-1] == "end"
    assert kinds.count("msg") < 6  # not one per request
    assert events[-1]["state"]["numDone"] == 3


def test_claim_cost_does_not_grow_with_run_size_or_finished_tasks(api: APIClient, settings: Any) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    settings.FARM_PROGRESS_INTERVAL = 3600
    new_worker(api, "w")
    small, big = new_run(api, 10), new_run(api, 10_000_000)
    claimed = api.post(f"/api/runs/{big}/tasks/claim", {"worker_uuid": "w", "count": 1000}, format="json")
    api.post(
        f"/api/runs/{big}/tasks/done",
        {"worker_uuid": "w", "tasks": [t["task"] for t in claimed.json()["tasks"]]},
        format="json",
    )
    claim(api, small, "w")
    counts = []
    for run in (small, big):
        with CaptureQueriesContext(connection) as queries:
            assert claim(api, run, "w").status_code == 201
        counts.append(len(queries))
        assert not any("COUNT(" in q["sql"] for q in queries.captured_queries)  # no scan of the run's tasks
    assert counts[0] == counts[1]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="reads PostgreSQL's per-transaction table statistics")
def test_claim_reads_no_finished_rows(api: APIClient, settings: Any) -> None:
    """Rows the claim statement reads from the task table (index or heap) do not grow with the
    number of tasks already done: those rows are never looked at."""
    settings.FARM_PROGRESS_INTERVAL = 3600
    new_worker(api, "w")
    run = new_run(api, 100_000)

    def rows_read() -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) "
                "FROM pg_stat_xact_user_tables WHERE relname = 'farm_task'"
            )
            return int(cursor.fetchone()[0])

    def read_by_one_claim() -> int:
        before = rows_read()
        assert claim(api, run, "w").status_code == 201
        return rows_read() - before

    first = read_by_one_claim()
    for _ in range(10):
        numbers = [
            t["task"]
            for t in api.post(
                f"/api/runs/{run}/tasks/claim", {"worker_uuid": "w", "count": 1000}, format="json"
            ).json()["tasks"]
        ]
        api.post(f"/api/runs/{run}/tasks/done", {"worker_uuid": "w", "tasks": numbers}, format="json")
    assert Task.objects.filter(status=Task.Status.DONE).count() == 10_000
    assert max(first, read_by_one_claim()) < 10  # the old single condition read all 10,001


def test_expire_leases_command_returns_silent_tasks_to_waiting(api: APIClient, settings: Any) -> None:
    from io import StringIO

    from django.core.management import call_command

    settings.FARM_LEASE_SECONDS = 60
    run = new_run(api, 3)
    new_worker(api, "w")
    claim(api, run, "w")
    claim(api, run, "w")
    Task.objects.filter(task=0).update(updated=timezone.now() - timedelta(seconds=61))
    out = StringIO()
    call_command("farm_expire_leases", stdout=out)
    assert out.getvalue().strip() == "1 tasks returned to waiting."
    body = api.get(f"/api/runs/{run}").json()
    assert (body["numWaiting"], body["numComputing"]) == (1, 1)
    assert claim(api, run, "w").json()["task"] == 0


@pytest.mark.django_db(transaction=True)
def test_run_ends_once_when_workers_finish_the_last_tasks_together(
    farm_user: User, token_client_for: Callable[[User], APIClient], monkeypatch: Any, settings: Any
) -> None:
    """Completions that commit at the same moment: the counter check after (or under a share lock
    with) each write means at least one of them sees the run complete and sends `end`."""
    settings.FARM_PROGRESS_INTERVAL = 3600
    events: list[dict[str, Any]] = []
    lock = threading.Lock()

    def record(**kw: Any) -> None:
        with lock:
            events.append(kw)

    monkeypatch.setattr("farm.services.progress_publish", record)
    api = token_client_for(farm_user)
    run = new_run(api, 16)
    clients = [token_client_for(farm_user) for _ in range(8)]
    held: list[list[int]] = []
    for i, client in enumerate(clients):
        new_worker(client, f"w{i}")
        response = client.post(f"/api/runs/{run}/tasks/claim", {"worker_uuid": f"w{i}", "count": 2}, format="json")
        held.append([t["task"] for t in response.json()["tasks"]])
    barrier = threading.Barrier(len(clients))
    statuses: list[int] = []

    def finish(i: int) -> None:
        try:
            barrier.wait()
            first, second = held[i]
            client = clients[i]
            statuses.append(client.put(f"/api/runs/{run}/tasks/{first}", {"status": "done"}, format="json").status_code)
            done = client.post(
                f"/api/runs/{run}/tasks/done", {"worker_uuid": f"w{i}", "tasks": [second]}, format="json"
            )
            statuses.append(done.status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=finish, args=(i,)) for i in range(len(clients))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(set(statuses)) == [200, 204]
    ends = [e for e in events if e["kind"] == "end"]
    assert ends and all(e["state"]["numDone"] == 16 for e in ends)


def test_lease_sweep_is_scheduled_for_the_cluster(db: None) -> None:
    from django.utils.module_loading import import_string
    from django_q.models import Schedule

    from farm.apps import LEASE_SWEEP
    from farm.services import leases_expire

    schedule = Schedule.objects.get(name=LEASE_SWEEP)
    assert (schedule.schedule_type, schedule.minutes, schedule.repeats) == (Schedule.MINUTES, 1, -1)
    assert import_string(schedule.func) is leases_expire


def test_run_controls_through_the_api(api: APIClient, token_client_for: Callable[[User], APIClient]) -> None:
    created = api.post(
        "/api/run", {"numTasks": 4, "name": "sweep", "labels": ["gpu", "nightly"], "maxComputing": 1}, format="json"
    )
    assert created.status_code == 201 and set(created.json()) == {"id", "uuid", "numTasks"}  # the seed's answer
    run = created.json()["uuid"]
    controls = f"/api/runs/{run}/controls"
    assert api.get(controls).json() == {
        "uuid": run,
        "name": "sweep",
        "labels": ["gpu", "nightly"],
        "maxComputing": 1,
        "paused": False,
    }
    new_worker(api, "w")
    assert claim(api, run, "w").status_code == 201
    assert claim(api, run, "w").status_code == 204  # at its maxComputing
    assert api.patch(controls, {"maxComputing": None, "paused": True}, format="json").json()["paused"] is True
    assert claim(api, run, "w").status_code == 204  # paused
    resumed = api.patch(controls, {"paused": False}, format="json").json()
    assert resumed["paused"] is False and resumed["maxComputing"] is None
    assert claim(api, run, "w").status_code == 201
    for bad in ({"paused": "yes"}, {"maxComputing": 0}, {"labels": "gpu"}, {"labels": ["x" * 51]}, {"name": "x" * 201}):
        refused = api.patch(controls, bad, format="json")
        assert refused.status_code == 400, bad
        assert set(refused.json()) == {"code", "message", "extra"}
    stranger = token_client_for(UserFactory(email="other@example.com"))
    assert stranger.patch(controls, {"paused": True}, format="json").status_code == 404
    assert Run.objects.get().paused is False


def test_batch_fail_and_restart_failed(api: APIClient) -> None:
    run = new_run(api, 3)
    new_worker(api, "w")
    claimed = api.post(f"/api/runs/{run}/tasks/claim", {"worker_uuid": "w", "count": 2}, format="json").json()
    assert [t["task"] for t in claimed["tasks"]] == [0, 1]
    failed = api.post(
        f"/api/runs/{run}/tasks/fail", {"worker_uuid": "w", "tasks": [1, 2], "reason": "out of memory"}, format="json"
    )
    assert failed.status_code == 200 and failed.json() == {"failed": [1], "refused": [2]}
    assert api.get(f"/api/runs/{run}", {"info": "numFailed"}).json() == {"numFailed": 1}
    info = api.get(f"/api/runs/{run}").json()
    assert (info["numFailed"], info["numComputing"], info["numNotStarted"]) == (1, 1, 1)
    assert api.get(f"/api/runs/{run}/tasks/1").json()["status"] == "failed"
    assert claim(api, run, "w").json()["task"] == 2  # 1 is never handed out again
    assert claim(api, run, "w").status_code == 204
    assert api.post(f"/api/runs/{run}/restart?failed=True").status_code == 204
    assert claim(api, run, "w").json()["task"] == 1
    assert api.post(f"/api/runs/{run}/restart?failed=maybe").status_code == 404
    assert api.post(f"/api/runs/{run}/tasks/fail", {"worker_uuid": "w"}, format="json").status_code == 400
