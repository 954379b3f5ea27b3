"""The 29 cases of the seed server's own test suite (taskfarm 0.4.0 `tests/test_taskfarm.py`),
run against our `/api/`. Numbers refer to the checklist in the wire spec §4.4."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from coordinator.models import User
from farm.models import Task
from tests.factories import DEFAULT_PASSWORD

pytestmark = pytest.mark.django_db


def create_run(api: APIClient, num_tasks: int = 10) -> dict[str, Any]:
    response = api.post("/api/run", {"numTasks": num_tasks}, format="json")
    assert response.status_code == 201
    return response.json()


def create_worker(api: APIClient, uuid: str = "uuid-worker-1") -> dict[str, Any]:
    response = api.post("/api/worker", {"uuid": uuid, "hostname": "test", "pid": 1000}, format="json")
    assert response.status_code == 201
    return response.json()


def get_task(api: APIClient, run: str, worker: str, expected: int = 201) -> Any:
    response = api.post(f"/api/runs/{run}/task", {"worker_uuid": worker}, format="json")
    assert response.status_code == expected
    return response


def task_info(api: APIClient, run: str, n: int, info: str = "", expected: int = 200) -> Any:
    response = api.get(f"/api/runs/{run}/tasks/{n}", {"info": info})
    assert response.status_code == expected
    return response


def update(api: APIClient, run: str, n: int, data: dict[str, Any], expected: int = 204) -> Any:
    response = api.put(f"/api/runs/{run}/tasks/{n}", data, format="json")
    assert response.status_code == expected
    return response


def restart(api: APIClient, run: str, params: str = "", expected: int = 204) -> Any:
    response = api.post(f"/api/runs/{run}/restart{params}")
    assert response.status_code == expected
    return response


def run_info(api: APIClient, run: str, info: str) -> Any:
    return api.get(f"/api/runs/{run}", {"info": info}).json()[info]


def test_01_user(farm_user: User) -> None:
    assert farm_user.check_password(DEFAULT_PASSWORD)
    assert not farm_user.check_password("wrong")
    assert User.objects.filter(email="test@example.com").exists()


def test_02_get_auth_token(basic_client: APIClient) -> None:
    response = basic_client.get("/api/token")
    assert response.status_code == 200
    assert response.json()["token"]


def test_03_auth_with_token(basic_client: APIClient) -> None:
    from tests.farm.conftest import basic

    token = basic_client.get("/api/token").json()["token"]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=basic(token, " "))
    assert client.get("/api/token").status_code == 200


def test_04_create_run(api: APIClient) -> None:
    assert create_run(api)["numTasks"] == 10


def test_05_get_all_runs(api: APIClient) -> None:
    runs = [create_run(api, n) for n in (10, 20, 30)]
    response = api.get("/api/runs")
    assert response.status_code == 200
    data = response.json()["data"]
    for i, run in enumerate(runs):
        assert data[i] == run


def test_06_get_run(api: APIClient) -> None:
    run = create_run(api)
    response = api.get(f"/api/runs/{run['uuid']}")
    assert response.status_code == 200
    body = response.json()
    assert body["uuid"] == run["uuid"] and body["numTasks"] == 10
    assert body["numComputing"] == body["numDone"] == body["numWaiting"] == 0
    assert body["percentDone"] == 0


def test_07_get_run_na(api: APIClient) -> None:
    assert api.get("/api/runs/" + "0" * 32).status_code == 404


def test_08_get_run_info_all(api: APIClient) -> None:
    run = create_run(api)
    body = api.get(f"/api/runs/{run['uuid']}", {"info": ""}).json()
    for key in ("id", "uuid", "numTasks"):
        assert body[key] == run[key]


def test_09_get_run_info(api: APIClient) -> None:
    run = create_run(api)
    for info in ("percentDone", "numWaiting", "numDone", "numComputing"):
        response = api.get(f"/api/runs/{run['uuid']}", {"info": info})
        assert response.status_code == 200
        assert list(response.json()) == [info]
    assert api.get(f"/api/runs/{run['uuid']}", {"info": "blub"}).status_code == 404


def test_10_delete_run(api: APIClient) -> None:
    run = create_run(api)
    assert api.delete(f"/api/runs/{run['uuid']}").status_code == 204
    assert api.get(f"/api/runs/{run['uuid']}").status_code == 404


def test_11_delete_run_na(api: APIClient) -> None:
    assert api.delete("/api/runs/norun").status_code == 404


def test_12_create_worker(api: APIClient) -> None:
    assert create_worker(api)["uuid"] == "uuid-worker-1"


def test_13_get_task_noworker(api: APIClient) -> None:
    run = create_run(api)
    response = api.post(f"/api/{run['uuid']}/task", {"worker_uuid": "x"}, format="json")
    assert response.status_code == 404


def test_14_get_task_wrongworker(api: APIClient) -> None:
    run = create_run(api)
    get_task(api, run["uuid"], "no_worker", expected=404)


def test_15_get_task_norun(api: APIClient) -> None:
    worker = create_worker(api)
    get_task(api, "norun", worker["uuid"], expected=404)


def test_16_get_task(api: APIClient) -> None:
    run = create_run(api)
    worker = create_worker(api)
    for i in range(10):
        body = get_task(api, run["uuid"], worker["uuid"]).json()
        assert body["percentCompleted"] == 0
        assert body["status"] == "computing"
        assert body["task"] == i
    response = get_task(api, run["uuid"], worker["uuid"], expected=204)
    assert response.content == b""
    assert run_info(api, run["uuid"], "numComputing") == 10
    assert run_info(api, run["uuid"], "numWaiting") == 0


def test_17_get_task_info_norun(api: APIClient) -> None:
    task_info(api, "norun", 0, expected=404)


def test_18_get_task_info_outofrange(api: APIClient) -> None:
    run = create_run(api)
    task_info(api, run["uuid"], -1, expected=404)
    task_info(api, run["uuid"], 10, expected=404)


def test_19_get_task_info_wronginfo(api: APIClient) -> None:
    run = create_run(api)
    task_info(api, run["uuid"], 0, info="no_such_thing", expected=404)


def test_20_get_existing_task_info(api: APIClient) -> None:
    run = create_run(api)
    worker = create_worker(api)
    task = get_task(api, run["uuid"], worker["uuid"]).json()
    assert task_info(api, run["uuid"], task["task"]).json() == task


def test_21_get_task_info(api: APIClient) -> None:
    run = create_run(api)
    body = task_info(api, run["uuid"], 0).json()
    assert body["task"] == 0
    assert body["status"] == "waiting" and body["percentCompleted"] == 0
    for info in ("status", "percentCompleted"):
        assert task_info(api, run["uuid"], 0, info=info).json() == {info: body[info]}


def test_22_update_task_info_nothing(api: APIClient) -> None:
    run = create_run(api)
    assert api.put(f"/api/runs/{run['uuid']}/tasks/0").status_code == 400


def test_23_update_task_info(api: APIClient) -> None:
    run = create_run(api)
    uuid = run["uuid"]
    for pct in (10, 20, 50.5, 100):
        update(api, uuid, 0, {"percentCompleted": pct})
        assert task_info(api, uuid, 0, "percentCompleted").json()["percentCompleted"] == pct
    for status in ("waiting", "computing", "done"):
        update(api, uuid, 0, {"status": status})
        assert task_info(api, uuid, 0, "status").json()["status"] == status


def test_24_update_task_info_wrong(api: APIClient) -> None:
    run = create_run(api)
    update(api, run["uuid"], 0, {"stat": "done"}, expected=400)
    update(api, run["uuid"], 0, {"status": "wrong"}, expected=400)


def test_25_get_task_waiting(api: APIClient) -> None:
    run = create_run(api)
    worker = create_worker(api)
    for _ in range(10):
        get_task(api, run["uuid"], worker["uuid"])
    update(api, run["uuid"], 5, {"status": "waiting"})
    assert run_info(api, run["uuid"], "numComputing") == 9
    assert get_task(api, run["uuid"], worker["uuid"]).json()["task"] == 5


def test_26_restart_run_norun(api: APIClient) -> None:
    restart(api, "norun", expected=404)


def test_27_restart_run_wrongparam(api: APIClient) -> None:
    run = create_run(api)
    restart(api, run["uuid"], "?all=wrong", expected=404)


def _half_done_run(api: APIClient) -> str:
    run = create_run(api)
    worker = create_worker(api)
    uuid = run["uuid"]
    for _ in range(10):
        get_task(api, uuid, worker["uuid"])
    for n in range(10):
        if n % 2 == 0:
            update(api, uuid, n, {"status": "done", "percentCompleted": 100})
        else:
            update(api, uuid, n, {"status": "computing", "percentCompleted": 50})
    assert (run_info(api, uuid, "numWaiting"), run_info(api, uuid, "numComputing"), run_info(api, uuid, "numDone")) == (
        0,
        5,
        5,
    )
    return uuid


def test_28_restart_run(api: APIClient) -> None:
    uuid = _half_done_run(api)
    # The seed's restart also took back tasks live workers compute; ours spares those (issue 14),
    # so this case lets the computing tasks' leases lapse first.
    Task.objects.filter(status="computing").update(updated=timezone.now() - timedelta(days=1))
    restart(api, uuid)
    assert run_info(api, uuid, "numWaiting") == 5
    assert run_info(api, uuid, "numComputing") == 0
    assert run_info(api, uuid, "numDone") == 5
    # the percentage of restarted tasks is kept
    assert task_info(api, uuid, 1, "percentCompleted").json()["percentCompleted"] == 50


def test_29_restart_run_all(api: APIClient) -> None:
    uuid = _half_done_run(api)
    restart(api, uuid, "?all=True")
    assert run_info(api, uuid, "numWaiting") == 10
    assert run_info(api, uuid, "numComputing") == 0
    assert run_info(api, uuid, "numDone") == 0
    assert run_info(api, uuid, "percentDone") == 0
