"""Run progress events: throttled per server process, the last change of a window still sent."""

from __future__ import annotations

import time
from typing import Any

import pytest
from rest_framework.test import APIClient

from progress.models import ProgressEvent
from tests.farm.test_api import claim, new_run, new_worker

pytestmark = pytest.mark.django_db(transaction=True)


def run_messages(run: str) -> list[ProgressEvent]:
    return list(ProgressEvent.objects.filter(topic=f"run:{run}", kind="msg").order_by("id"))


def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_last_change_inside_a_window_is_sent_when_the_window_closes(api: APIClient, settings: Any) -> None:
    settings.FARM_PROGRESS_INTERVAL = 0.5
    settings.FARM_PROGRESS_TRAILING = True
    run = new_run(api, 3)
    new_worker(api, "w")
    n = claim(api, run, "w").json()["task"]  # leading edge: sent at once
    assert len(run_messages(run)) == 1
    api.put(f"/api/runs/{run}/tasks/{n}", {"percentCompleted": 40}, format="json")
    api.put(f"/api/runs/{run}/tasks/{n}", {"percentCompleted": 70}, format="json")  # both inside the window
    assert len(run_messages(run)) == 1
    wait_for(lambda: len(run_messages(run)) == 2)
    trailing = run_messages(run)[-1]
    assert trailing.text == f"task {n}: computing 70%"
    assert trailing.state["percentDone"] == pytest.approx(70 / 3)  # 70% of one task of three
    time.sleep(0.8)
    assert len(run_messages(run)) == 2  # nothing more changed: nothing more is sent


def test_without_trailing_the_window_swallows_the_last_change(api: APIClient, settings: Any) -> None:
    settings.FARM_PROGRESS_INTERVAL = 0.3
    settings.FARM_PROGRESS_TRAILING = False
    run = new_run(api, 3)
    new_worker(api, "w")
    n = claim(api, run, "w").json()["task"]
    api.put(f"/api/runs/{run}/tasks/{n}", {"percentCompleted": 40}, format="json")
    time.sleep(0.8)
    assert len(run_messages(run)) == 1


def test_a_run_that_is_slow_to_count_gets_a_wider_window(api: APIClient, settings: Any) -> None:
    from farm import throttle
    from farm.models import Run

    settings.FARM_PROGRESS_INTERVAL = 0.2
    settings.FARM_PROGRESS_TRAILING = False
    run = new_run(api, 10)
    new_worker(api, "w")
    claim(api, run, "w")  # leading edge: counted and sent
    run_id = Run.objects.get(uuid=run).pk
    assert throttle.window(run_id) == 0.2  # a 10-task count is quick
    throttle.count_took(run_id, 1.0)  # as a run of about four million touched tasks counts here
    assert throttle.window(run_id) == throttle.COUNT_COST_FACTOR * 1.0
    time.sleep(0.3)  # past the configured interval, inside the widened window
    claim(api, run, "w")
    assert len(run_messages(run)) == 1
