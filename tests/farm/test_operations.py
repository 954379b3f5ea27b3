"""The farm's panel of the operations dashboard: failures and completion latency fill the minute
values from what workers report through the farm API."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

import farm.services
from coordinator.models import MetricMinute
from coordinator.services import operations_record
from tests.farm.test_api import new_run, new_worker

pytestmark = pytest.mark.django_db


def recorded_for(moment: datetime) -> dict[str, float]:
    minute = int(moment.replace(second=0, microsecond=0).timestamp())
    return dict(MetricMinute.objects.filter(minute=minute).values_list("series", "value"))


def test_failures_and_completion_latency_fill_the_minutes_from_the_farm_api(api: APIClient, monkeypatch: Any) -> None:
    clock = SimpleNamespace(at=farm.services.timezone.now())
    monkeypatch.setattr(farm.services, "timezone", SimpleNamespace(now=lambda: clock.at))
    first = clock.at
    operations_record(now=first)  # the workers' totals before the work
    run = new_run(api, 5)
    new_worker(api, "w")
    claimed = api.post(f"/api/runs/{run}/tasks/claim", {"worker_uuid": "w", "count": 4}, format="json").json()
    assert [t["task"] for t in claimed["tasks"]] == [0, 1, 2, 3]

    clock.at = first + timedelta(seconds=30)
    done = api.post(f"/api/runs/{run}/tasks/done", {"worker_uuid": "w", "tasks": [0, 1]}, format="json")
    assert done.status_code == 200
    clock.at = first + timedelta(seconds=90)
    # The seed's single-task PUT finishes a task too; a task reported failed counts as a failure.
    assert api.put(f"/api/runs/{run}/tasks/2", {"status": "done"}, format="json").status_code == 204
    failed = api.post(f"/api/runs/{run}/tasks/fail", {"worker_uuid": "w", "tasks": [3]}, format="json")
    assert failed.json()["failed"] == [3]

    operations_record(now=first + timedelta(minutes=1))
    values = recorded_for(first)
    assert (values["farm.done"], values["farm.failed"]) == (3, 1)
    assert values["farm.latency_mean"] == pytest.approx((30 + 30 + 90) / 3)
    # A quiet minute after it: nothing finished, so no latency is drawn for it.
    operations_record(now=first + timedelta(minutes=2))
    quiet = recorded_for(first + timedelta(minutes=1))
    assert (quiet["farm.done"], quiet["farm.failed"]) == (0, 0) and "farm.latency_mean" not in quiet


def test_the_farm_panel_charts_failures_and_latency_over_the_hour_and_the_day(admin: Any) -> None:
    minute = int(farm.services.timezone.now().replace(second=0, microsecond=0).timestamp()) - 120
    MetricMinute.objects.create(series="farm.failed", minute=minute, value=2)
    MetricMinute.objects.create(series="farm.latency_mean", minute=minute, value=12.5)
    client = Client()
    client.force_login(admin)
    html = client.get("/admin/").content.decode()
    data = json.loads(html.split('<script id="ops-data" type="application/json">')[1].split("</script>")[0])
    drawn = {series["name"]: chart for chart, all_series in data["charts"].items() for series in all_series}
    assert drawn["farm.failed"].startswith("chart-farm-") and drawn["farm.latency_mean"].startswith("chart-farm-")
    assert f'id="{drawn["farm.latency_mean"]}"' in html
    assert data["hour"]["farm.failed"] == [[minute, 2.0, 1]]
    assert data["day"]["farm.latency_mean"] == [[minute // 300 * 300, 12.5, 1]]
