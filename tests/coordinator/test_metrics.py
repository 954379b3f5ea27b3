"""`GET /metrics`: who may scrape it, and that each family counts what was done (read back with
prometheus-client's own text parser)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

import tests.jobs.sample_jobs  # noqa: F401 - registers the test job functions
from coordinator.models import User
from farm.models import Task
from farm.services import leases_expire, run_create, tasks_claim, tasks_complete, tasks_fail, worker_register
from jobs.models import Job
from jobs.services import job_create, job_execute, jobs_recover_stale
from pool.models import Device
from pool.services import device_create, heartbeat_record, task_create
from progress.services import progress_publish
from tests.live import run_wsgi_server
from tests.pool.conftest import device_client

TOKEN = "scrape-" + "x" * 32

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def scrape(settings: Any) -> Callable[[], Samples]:
    settings.METRICS_TOKEN = TOKEN

    def read() -> Samples:
        response = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
        assert response.status_code == 200, response.content
        assert response["Content-Type"].startswith("text/plain")
        return parse(response.content.decode())

    return read


def test_refused_to_everyone_when_nothing_is_configured(db: None, settings: Any) -> None:
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_ADDRESSES = []
    assert Client().get("/metrics").status_code == 403
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 403
    assert Client().get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 403


def test_token_is_required_and_checked(db: None, settings: Any) -> None:
    settings.METRICS_TOKEN = TOKEN
    settings.METRICS_ALLOWED_ADDRESSES = []
    missing = Client().get("/metrics")
    assert missing.status_code == 401 and missing["WWW-Authenticate"].startswith("Bearer")
    assert b"coordinator_" not in missing.content
    assert Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}x").status_code == 401
    assert Client().get("/metrics", HTTP_AUTHORIZATION=f"Basic {TOKEN}").status_code == 401
    assert Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200
    assert Client().post("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 405


def test_allowed_addresses_and_a_forged_forwarded_for(db: None, settings: Any) -> None:
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_ADDRESSES = ["10.0.0.0/8", "192.0.2.7"]
    assert Client(REMOTE_ADDR="10.20.30.40").get("/metrics").status_code == 200
    assert Client(REMOTE_ADDR="192.0.2.7").get("/metrics").status_code == 200
    assert Client(REMOTE_ADDR="192.0.2.8").get("/metrics").status_code == 403
    # Behind the one trusted proxy, the address it appended counts, not one the client wrote before it.
    forged = Client(REMOTE_ADDR="127.0.0.1").get("/metrics", HTTP_X_FORWARDED_FOR="10.1.1.1, 198.51.100.9")
    assert forged.status_code == 403
    proxied = Client(REMOTE_ADDR="127.0.0.1").get("/metrics", HTTP_X_FORWARDED_FOR="198.51.100.9, 10.1.1.1")
    assert proxied.status_code == 200


def test_http_requests_by_route_method_and_status(db: None, scrape: Callable[[], Samples]) -> None:
    from django.core.cache import cache

    from jobs.conf import SWEEP_SEEN_KEY

    cache.delete(SWEEP_SEEN_KEY)  # a cluster of another test may have swept into the shared cache
    before = scrape()
    for _ in range(3):
        assert Client().get("/healthz").status_code == 200
    assert Client().get("/no/such/page").status_code == 404
    assert Client().post("/healthz").status_code == 405
    after = scrape()
    for labels, count in (
        ({"route": "healthz", "method": "GET", "status": "200"}, 3),
        ({"route": "unmatched", "method": "GET", "status": "404"}, 1),
        ({"route": "healthz", "method": "POST", "status": "405"}, 1),
    ):
        name = "coordinator_http_requests_total"
        assert value(after, name, **labels) - value(before, name, **labels) == count
    name = "coordinator_http_request_duration_seconds_count"
    assert value(after, name, route="healthz") - value(before, name, route="healthz") == 4
    assert value(after, name, route="metrics") - value(before, name, route="metrics") == 1  # the first scrape
    # No label holds a path or an id.
    assert not any(dict(labels).get("route", "").startswith("/") for _, labels in after)


def test_jobs_counted_by_type_and_queue(user: User, scrape: Callable[[], Samples]) -> None:
    before = scrape()
    ok = job_create(type="tests.record", data={"path": "/dev/null"}, user=user)
    bad = job_create(type="tests.fail", data={"message": "boom"}, user=user)
    flaky = job_create(type="tests.flaky", data={"succeed_on": 2}, user=user)
    waiting = [job_create(type="tests.sleep", data={"seconds": 1}, user=user) for _ in range(2)]
    assert job_execute(job_id=ok.pk) == "success"
    assert job_execute(job_id=bad.pk) == "failure"
    assert job_execute(job_id=flaky.pk) == "fresh"  # attempt 1 fails, put back
    assert job_execute(job_id=flaky.pk) == "success"
    lost = job_create(type="tests.record", data={"path": "/dev/null"}, user=user)
    Job.objects.filter(pk=lost.pk).update(
        status=Job.Status.STARTED, worker="gone", heartbeat_at=timezone.now() - timedelta(hours=1)
    )
    assert jobs_recover_stale(stale_seconds=30) == [lost.pk]
    after = scrape()

    def delta(name: str, job_type: str) -> float:
        labels = {"type": job_type, "queue": "default"}
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("coordinator_jobs_submitted_total", "tests.record") == 2
    assert delta("coordinator_jobs_submitted_total", "tests.sleep") == 2
    assert delta("coordinator_jobs_started_total", "tests.flaky") == 2
    assert delta("coordinator_jobs_succeeded_total", "tests.record") == 1
    assert delta("coordinator_jobs_succeeded_total", "tests.flaky") == 1
    assert delta("coordinator_jobs_retried_total", "tests.flaky") == 1
    assert delta("coordinator_jobs_failed_total", "tests.fail") == 1
    assert delta("coordinator_jobs_stale_recovered_total", "tests.record") == 1
    assert delta("coordinator_jobs_run_duration_seconds_count", "tests.flaky") == 2
    # State at scrape time: the two sleeping jobs and the recovered one wait; none runs.
    assert value(after, "coordinator_jobs_queue_depth", type="tests.sleep", queue="default") == len(waiting)
    assert value(after, "coordinator_jobs_queue_depth", type="tests.record", queue="default") == 1
    assert not any(name == "coordinator_jobs_running" for name, _ in after)


def test_farm_claims_completions_lapses_and_state(user: User, scrape: Callable[[], Samples], settings: Any) -> None:
    before = scrape()
    run = run_create(owner=user, num_tasks=10)
    worker = worker_register(owner=user, uuid=uuid.uuid4().hex, hostname="h", pid=1)
    taken = tasks_claim(run=run, worker=worker, limit=4)
    assert len(taken) == 4
    tasks_complete(run=run, worker=worker, numbers=[taken[0].task, taken[1].task])
    tasks_fail(run=run, worker=worker, numbers=[taken[2].task])
    Task.objects.filter(pk=taken[3].pk).update(
        updated=timezone.now() - timedelta(seconds=settings.FARM_LEASE_SECONDS + 5)
    )
    assert leases_expire() == 1
    after = scrape()
    assert (
        value(after, "coordinator_farm_tasks_claimed_total") - value(before, "coordinator_farm_tasks_claimed_total")
        == 4
    )
    finished = "coordinator_farm_tasks_finished_total"
    assert value(after, finished, status="done") - value(before, finished, status="done") == 2
    assert value(after, finished, status="failed") - value(before, finished, status="failed") == 1
    lapsed = "coordinator_farm_leases_expired_total"
    assert value(after, lapsed) - value(before, lapsed) == 1
    # 6 numbers nobody took yet and the lapsed one back to waiting; the worker was seen just now.
    assert value(after, "coordinator_farm_tasks", status="waiting") == 7
    assert value(after, "coordinator_farm_tasks", status="computing") == 0
    assert value(after, "coordinator_farm_workers_active") == 1


def test_pool_devices_deliveries_answers_and_heartbeat_ages(master: User, scrape: Callable[[], Samples]) -> None:
    devices = [device_create(name=f"d{i}", validated=True)[0] for i in range(3)]
    heartbeat_record(device=devices[0])
    Device.objects.filter(pk=devices[1].pk).update(last_heartbeat_at=timezone.now() - timedelta(hours=2))
    task = task_create(user=master, to="device:[" + ",".join(str(d.pk) for d in devices) + "]", title="t")
    before = scrape()
    answer = device_client(devices[0]).post(
        "/pool/response", {"parent_id": task.msg_id, "status": "done"}, format="json"
    )
    assert answer.status_code == 201
    progress = device_client(devices[1]).post(
        "/pool/response", {"parent_id": task.msg_id, "meta": {"status": "progress", "progress": 5}}, format="json"
    )
    assert progress.status_code == 201
    after = scrape()
    responses = "coordinator_pool_responses_total"
    assert value(after, responses, status="done") - value(before, responses, status="done") == 1
    assert value(after, responses, status="progress") - value(before, responses, status="progress") == 1
    assert value(after, "coordinator_pool_devices", state="online") == 1
    assert value(after, "coordinator_pool_devices", state="offline") == 2
    assert value(after, "coordinator_pool_deliveries_open", state="pending") == 1
    assert value(after, "coordinator_pool_deliveries_open", state="progress") == 1
    ages = "coordinator_pool_heartbeat_age_seconds_bucket"
    assert value(after, ages, le="60.0") == 1  # the fresh heartbeat
    assert value(after, ages, le="21600.0") == 2  # and the one two hours old
    assert value(after, ages, le="+Inf") == 2  # the device that never sent one is not in it
    assert 7200 < value(after, "coordinator_pool_heartbeat_age_seconds_gsum") < 7300


def test_progress_events_stored_and_socket_streams(db: None, scrape: Callable[[], Samples]) -> None:
    before = scrape()
    progress_publish(topic="stream:3", kind="new", text="backup")
    progress_publish(topic="stream:3", kind="msg", text="50%")
    progress_publish(topic="stream:4", kind="new", text="other")
    progress_publish(topic="stream:4", kind="end", text="")
    after = scrape()
    stored = "coordinator_progress_events_stored_total"
    assert value(after, stored, kind="new") - value(before, stored, kind="new") == 2
    assert value(after, stored, kind="msg") - value(before, stored, kind="msg") == 1
    assert value(after, stored, kind="end") - value(before, stored, kind="end") == 1
    assert value(after, "coordinator_progress_socket_streams") == 1


def test_pool_rollouts_open_queued_and_decided(master: User, scrape: Callable[[], Samples]) -> None:
    from pool.rollouts import rollouts_advance
    from pool.services import task_pause

    devices = [device_create(name=f"r{i}", validated=True)[0] for i in range(5)]
    ids = ",".join(str(d.pk) for d in devices)
    before = scrape()
    task_create(user=master, to=f"device:[{ids}]", title="fw", meta={"rollout": {"per_minute": 2}})
    second = task_create(user=master, to=f"device:[{ids}]", title="fw2", meta={"rollout": {"per_minute": 2}})
    task_pause(task=second)
    rollouts_advance()
    after = scrape()
    assert value(after, "coordinator_pool_rollouts_open", state="in_progress") == 1
    assert value(after, "coordinator_pool_rollouts_open", state="paused") == 1
    assert value(after, "coordinator_pool_deliveries_queued") == 3 + 5
    released = "coordinator_pool_rollout_decisions_total"
    assert value(after, released, decision="released") - value(before, released, decision="released") == 2


def test_every_web_process_counts_under_multiprocess_mode(transactional_db: None, tmp_path: Path) -> None:
    """Two granian workers, each counting into its own files: one scrape answers their sum."""
    directory = tmp_path / "metrics"
    directory.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(directory), "METRICS_TOKEN": TOKEN}
    with run_wsgi_server(workers=2, **env) as base:
        session = requests.Session()
        before = parse(session.get(f"{base}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text)
        for _ in range(40):
            # A new connection each time, so both workers take requests.
            # /ping, not /healthz: whether the platform is healthy is not this test's business.
            assert requests.get(f"{base}/ping", timeout=10).status_code == 200
        response = requests.get(f"{base}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert response.status_code == 200
    after = parse(response.text)
    labels = {"route": "pytasks-ping", "method": "GET", "status": "200"}
    name = "coordinator_http_requests_total"
    assert value(after, name, **labels) - value(before, name, **labels) == 40
    assert len(list(directory.glob("counter_*.db"))) >= 2  # the workers' own files


def test_the_grafana_dashboard_asks_only_for_families_the_platform_serves(db: None, scrape: Any) -> None:
    import json
    import re

    text = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").content.decode()
    served = set(re.findall(r"^# HELP (\S+) ", text, re.MULTILINE))
    dashboard = json.loads((Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json").read_text())
    asked = {
        name
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        for name in re.findall(r"coordinator_\w+", target["expr"])
    }
    assert len(asked) > 15
    assert {name for name in asked if name not in served and name.removesuffix("_bucket") not in served} == set()
