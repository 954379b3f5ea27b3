"""Database round trips per request on the hot paths: they must not grow with the run's size.

The taskfarm client spends 4 requests per task (claim, GET percentCompleted, PUT percent=100,
PUT status=done); the batch path 2 per 100 tasks. Every query is the ORM's. These pin how many queries each costs in the
steady state (progress events throttled), so a change that adds a round trip shows up here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


def _count(call: Callable[[], Any], expected_status: int) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = call()
    assert response.status_code == expected_status, response.content
    return len(ctx.captured_queries)


def _client_cycle(api: APIClient, run: str, worker: str) -> dict[str, int]:
    """One task as `taskfarm-worker` does it; returns queries per request."""
    counts: dict[str, int] = {}
    holder: dict[str, Any] = {}

    def claim() -> Any:
        holder["r"] = api.post(f"/api/runs/{run}/task", {"worker_uuid": worker}, format="json")
        return holder["r"]

    counts["claim"] = _count(claim, 201)
    n = holder["r"].json()["task"]
    url = f"/api/runs/{run}/tasks/{n}"
    counts["get"] = _count(lambda: api.get(url, {"info": "percentCompleted"}), 200)
    counts["put_percent"] = _count(lambda: api.put(url, {"percentCompleted": 100}, format="json"), 204)
    counts["put_done"] = _count(lambda: api.put(url, {"status": "done"}, format="json"), 204)
    return counts


def test_queries_per_client_request(api: APIClient, settings: Any) -> None:
    settings.FARM_PROGRESS_INTERVAL = 3600  # steady state: no progress event due
    run = api.post("/api/run", {"numTasks": 50}, format="json").json()["uuid"]
    assert api.post("/api/worker", {"uuid": "qw", "hostname": "h", "pid": 1}, format="json").status_code == 201
    _client_cycle(api, run, "qw")  # the first event of the run is always sent
    first = _client_cycle(api, run, "qw")
    for _ in range(10):
        _client_cycle(api, run, "qw")
    later = _client_cycle(api, run, "qw")
    print(f"\nqueries per request ({connection.vendor}): {later}")
    assert later == first  # does not grow with finished tasks
    assert later == QUERIES_PER_CLIENT_REQUEST


def test_queries_per_batch_request(api: APIClient, settings: Any) -> None:
    settings.FARM_PROGRESS_INTERVAL = 3600
    run = api.post("/api/run", {"numTasks": 2000}, format="json").json()["uuid"]
    assert api.post("/api/worker", {"uuid": "qb", "hostname": "h", "pid": 1}, format="json").status_code == 201
    seen: list[dict[str, int]] = []
    holder: dict[str, Any] = {}

    def claim() -> Any:
        holder["r"] = api.post(f"/api/runs/{run}/tasks/claim", {"worker_uuid": "qb", "count": 100}, format="json")
        return holder["r"]

    def done() -> Any:
        return api.post(f"/api/runs/{run}/tasks/done", {"worker_uuid": "qb", "tasks": holder["numbers"]}, format="json")

    for _ in range(5):
        claimed = _count(claim, 200)
        holder["numbers"] = [t["task"] for t in holder["r"].json()["tasks"]]
        assert len(holder["numbers"]) == 100
        completed = _count(done, 200)
        seen.append({"claim": claimed, "done": completed})
    print(f"\nqueries per batch request ({connection.vendor}): {seen[-1]}")
    assert seen[-1] == seen[1]
    assert seen[-1] == QUERIES_PER_BATCH_REQUEST


# The same on both databases. Every request first reads the token's user (1 +); the two savepoint
# statements are the service's transaction (BEGIN and COMMIT in production).
# claim: worker, run, lock the run, waiting rows, lapsed rows, rows above the counter, insert, counter.
# get: the task joined on its run. put_percent: run, lock the task, update it.
# put_done: run, lock the run, lock the task, update it, credit the worker.
# batch done: worker, run, lock the run, the rows held, update them, credit the worker.
TRANSACTION = 2
QUERIES_PER_CLIENT_REQUEST: dict[str, int] = {
    "claim": 1 + 8 + TRANSACTION,
    "get": 1 + 1,
    "put_percent": 1 + 3 + TRANSACTION,
    "put_done": 1 + 5 + TRANSACTION,
}
QUERIES_PER_BATCH_REQUEST: dict[str, int] = {"claim": 1 + 8 + TRANSACTION, "done": 1 + 6 + TRANSACTION}
