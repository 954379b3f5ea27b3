"""Staged rollouts: policy validation, release rate, ramp, window, abort, timeout, retries, states,
pause/resume, and the decisions' events and day-log lines. The clock is injected (`now=`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from pool import services
from pool.models import Delivery, Message
from pool.rollouts import rollout_step, rollouts_advance
from pool.services import response_create, task_cancel, task_create, task_pause, task_resume
from tests.pool.conftest import device_client

T0 = datetime(2026, 12, 10, 2, 0, tzinfo=UTC)


def minute(n: float) -> datetime:
    return T0 + timedelta(minutes=n)


@pytest.fixture
def fleet(make_device):
    return [make_device(f"d{i}") for i in range(30)]


def rollout(master, devices, **policy) -> Message:
    ids = ",".join(str(d.pk) for d in devices)
    return task_create(user=master, to=f"device:[{ids}]", title="firmware", meta={"rollout": policy})


def states(task: Message) -> dict[str, int]:
    found: dict[str, int] = {}
    for state in Delivery.objects.filter(task=task).values_list("state", flat=True):
        found[state] = found.get(state, 0) + 1
    return found


def answer_all(task: Message, status: str, limit: int | None = None) -> int:
    rows = list(Delivery.objects.filter(task=task, state="pending").select_related("device").order_by("id"))[:limit]
    for row in rows:
        response_create(device=row.device, parent_id=task.msg_id, status=status)
    return len(rows)


def test_deliveries_start_queued_and_devices_see_only_released_ones(fleet, master):
    task = rollout(master, fleet, per_minute=10)
    assert task.state == "scheduled" and states(task) == {"queued": 30}
    assert device_client(fleet[0]).get("/pool/pending").json() == []
    # a device cannot answer what it was never given
    assert (
        device_client(fleet[0]).post("/pool/response", {"parent_id": task.msg_id, "status": "done"}).status_code == 404
    )

    step = rollout_step(task_id=task.pk, now=minute(0))
    assert step.released == 10
    task.refresh_from_db()
    assert task.state == "in_progress" and states(task) == {"pending": 10, "queued": 20}
    released = set(Delivery.objects.filter(task=task, state="pending").values_list("device_id", flat=True))
    assert released == {d.pk for d in fleet[:10]}  # in order
    assert [m["id"] for m in device_client(fleet[0]).get("/pool/pending").json()] == [task.msg_id]
    assert device_client(fleet[29]).get("/pool/pending").json() == []


def test_the_rate_holds_over_any_minute_however_often_the_step_runs(fleet, master):
    task = rollout(master, fleet, per_minute=7)
    released = [rollout_step(task_id=task.pk, now=minute(n)).released for n in (0, 0.25, 0.5, 0.99)]
    assert released == [7, 0, 0, 0]
    assert rollout_step(task_id=task.pk, now=minute(1.01)).released == 7
    assert rollout_step(task_id=task.pk, now=minute(2.5)).released == 7
    assert rollout_step(task_id=task.pk, now=minute(3.6)).released == 7
    assert rollout_step(task_id=task.pk, now=minute(4.7)).released == 2  # what was left
    assert states(task) == {"pending": 30}


def test_the_rate_ramps_up_with_successes_to_its_maximum(fleet, master):
    task = rollout(master, fleet, per_minute=2, ramp={"factor": 2, "every_succeeded": 2, "max_per_minute": 5})
    assert rollout_step(task_id=task.pk, now=minute(0)).released == 2
    answer_all(task, "done")  # 2 succeeded: ×2
    step = rollout_step(task_id=task.pk, now=minute(1.1))
    assert (step.rate, step.released) == (4, 4)
    answer_all(task, "done")  # 6 succeeded: 2·2³ = 16, capped at 5
    step = rollout_step(task_id=task.pk, now=minute(2.2))
    assert (step.rate, step.released) == (5, 5)


def test_nothing_is_released_outside_the_window(fleet, master):
    window = {"start": "2026-12-10T02:00:00Z", "end": "2026-12-10T02:03:00Z"}
    task = rollout(master, fleet, per_minute=5, window=window)
    assert rollout_step(task_id=task.pk, now=minute(-1)).released == 0
    assert Message.objects.get(pk=task.pk).state == "scheduled"
    assert rollout_step(task_id=task.pk, now=minute(0)).released == 5
    assert rollout_step(task_id=task.pk, now=minute(2.9)).released == 5
    assert rollout_step(task_id=task.pk, now=minute(3)).released == 0  # the window has ended
    assert rollout_step(task_id=task.pk, now=minute(10)).released == 0
    assert states(task) == {"pending": 10, "queued": 20}


def test_the_abort_threshold_stops_the_rollout_and_records_why(fleet, master, monkeypatch):
    events: list[dict] = []
    monkeypatch.setattr(services, "progress_publish", lambda **kw: events.append(kw))
    task = rollout(master, fleet, per_minute=10, abort={"failed_percent": 30, "min_finished": 5})
    rollout_step(task_id=task.pk, now=minute(0))
    answer_all(task, "done", limit=3)
    answer_all(task, "failed", limit=1)
    # 1 of 4 finished failed, but fewer than min_finished have finished: go on
    assert rollout_step(task_id=task.pk, now=minute(1.1)).aborted == ""
    answer_all(task, "failed", limit=2)  # 3 of 6 failed: 50% ≥ 30%
    step = rollout_step(task_id=task.pk, now=minute(2.2))
    assert step.aborted.startswith("3 of 6 finished deliveries failed or timed out (50.0% ≥ 30%)")
    task.refresh_from_db()
    assert task.state == "aborted" and task.abort_reason == step.aborted
    counts = states(task)
    assert counts["cancelled"] == 10 and "queued" not in counts  # the unreleased ones
    assert counts["pending"] == 14  # released ones carry on
    assert rollout_step(task_id=task.pk, now=minute(3.3)) is None  # closed: no more decisions
    assert task_cancel(task=task) is False
    # each decision is an info line in the day log and a progress event
    infos = list(Message.objects.filter(type="info", parent_id=task.msg_id).order_by("seq"))
    assert [m.title for m in infos][0].startswith("rollout: released 10")
    assert infos[-1].title.startswith("rollout: aborted: 3 of 6") and infos[-1].meta["rollout"]["aborted"]
    assert events[-1]["kind"] == "end" and events[-1]["state"]["task_state"] == "aborted"


def test_timeouts_and_retries(fleet, master):
    devices = fleet[:4]
    task = rollout(
        master,
        devices,
        per_minute=10,
        in_progress_timeout_seconds=120,
        retries={"max": 1, "on": ["failed", "timed_out"]},
    )
    rollout_step(task_id=task.pk, now=minute(0))
    response_create(device=devices[0], parent_id=task.msg_id, status="done")
    response_create(device=devices[1], parent_id=task.msg_id, status="failed")
    response_create(device=devices[2], parent_id=task.msg_id, status="progress")
    # at 1 min: the failure is queued again and released at once (a new attempt)
    step = rollout_step(task_id=task.pk, now=minute(1.5))
    assert (step.timed_out, step.retried, step.released) == (0, 1, 1)
    # at 2.5 min the two silent ones (released at 0) time out, are retried and released again
    step = rollout_step(task_id=task.pk, now=minute(2.5))
    assert (step.timed_out, step.retried, step.released) == (2, 2, 2)
    attempts = dict(Delivery.objects.filter(task=task).values_list("device_id", "attempts"))
    assert attempts == {devices[0].pk: 1, devices[1].pk: 2, devices[2].pk: 2, devices[3].pk: 2}
    # a late answer to a timed-out attempt is refused; the retried one may be answered
    response_create(device=devices[1], parent_id=task.msg_id, status="failed")
    # at 5 min: the retried ones time out again; no retries left, so they stay timed out
    step = rollout_step(task_id=task.pk, now=minute(5))
    assert (step.timed_out, step.retried, step.released) == (2, 0, 0)
    assert step.completed
    task.refresh_from_db()
    assert task.state == "completed"
    assert states(task) == {"done": 1, "failed": 1, "timed_out": 2}
    late = device_client(devices[3]).post("/pool/response", {"parent_id": task.msg_id, "status": "done"})
    assert late.status_code == 409 and late.json()["code"] == "task_closed"


def test_pause_resume_and_cancel(fleet, master, client_for):
    task = rollout(master, fleet, per_minute=10)
    client = client_for(master)
    paused = client.post(f"/pool/tasks/{task.msg_id}/pause")
    assert paused.status_code == 200 and paused.json()["paused"] is True
    assert task_pause(task=task) is False  # already paused
    assert rollout_step(task_id=task.pk, now=minute(0)).released == 0
    assert client.post(f"/pool/tasks/{task.msg_id}/resume").json()["paused"] is False
    assert task_resume(task=task) is False
    assert rollout_step(task_id=task.pk, now=minute(1)).released == 10
    cancelled = client.post(f"/pool/tasks/{task.msg_id}/cancel").json()
    assert cancelled["state"] == "cancelled" and cancelled["counts"]["cancelled"] == 30
    assert rollouts_advance(now=minute(2))["rollouts"] == 0
    again = client.post(f"/pool/tasks/{task.msg_id}/pause")
    assert again.status_code == 409 and again.json()["code"] == "task_not_open"


def test_continuous_rollouts_queue_devices_that_join(make_device, master):
    from pool.services import device_set_tags

    a, b = make_device("a"), make_device("b")
    device_set_tags(device=a, tags=["fw"])
    task = task_create(user=master, to="device:tag:fw", meta={"continuous": True, "rollout": {"per_minute": 5}})
    device_set_tags(device=b, tags=["fw"])
    assert states(task) == {"queued": 2}
    assert rollout_step(task_id=task.pk, now=minute(0)).released == 2
    assert not rollout_step(task_id=task.pk, now=minute(1)).completed  # continuous: stays open


def test_a_rollout_to_every_device_releases_the_whole_fleet_in_stages(make_device, master, client_for):
    fleet = [make_device(f"d{i}") for i in range(5)]
    make_device("off", enabled=False)
    later = make_device("new", validated=False)
    answer = client_for(master).post(
        "/pool/task", {"to": "device:*", "meta": {"rollout": {"per_minute": 2}}}, format="json"
    )
    assert answer.status_code == 201 and answer.json()["to"] == "device:*"
    task = Message.objects.get(msg_id=answer.json()["id"])
    assert states(task) == {"queued": 5}  # every device that receives broadcasts, none other
    # polling materialises nothing pending: the staged broadcast waits for its release
    assert [device_client(d).get("/pool/pending").json() for d in fleet] == [[]] * 5
    assert rollout_step(task_id=task.pk, now=minute(0)).released == 2
    assert [bool(device_client(d).get("/pool/pending").json()) for d in fleet] == [True, True, False, False, False]
    # a device validated meanwhile joins the queue (device:* reaches later devices), not the front
    services.device_set_flags(devices=[later], validated=True)
    assert device_client(later).get("/pool/pending").json() == []
    answer_all(task, "done")
    assert rollout_step(task_id=task.pk, now=minute(1.1)).released == 2
    answer_all(task, "done")
    step = rollout_step(task_id=task.pk, now=minute(2.2))
    assert step.released == 2 and not step.completed
    assert Delivery.objects.get(task=task, device=later).attempts == 1
    answer_all(task, "done")
    # every device answered, but device:* stays open for devices yet to come, until cancelled
    assert not rollout_step(task_id=task.pk, now=minute(3.3)).completed
    assert states(task) == {"done": 6} and Message.objects.get(pk=task.pk).state == "in_progress"
    assert task_cancel(task=task)


def test_a_rollout_ends_at_its_expiry_releasing_nothing_more(fleet, master):
    expiry = timezone.now() + timedelta(hours=1)
    task = task_create(
        user=master,
        to="device:[" + ",".join(str(d.pk) for d in fleet[:6]) + "]",
        meta={"rollout": {"per_minute": 2}},
        expires_at=expiry,
    )
    rollout_step(task_id=task.pk, now=expiry - timedelta(minutes=1))
    answer_all(task, "done", limit=1)
    assert rollout_step(task_id=task.pk, now=expiry) is None
    task.refresh_from_db()
    assert task.state == "completed"
    assert states(task) == {"done": 1, "timed_out": 1, "cancelled": 4}
    assert rollouts_advance(now=expiry + timedelta(minutes=1))["rollouts"] == 0


@pytest.mark.parametrize(
    "policy, field",
    [
        ({"per_minute": -5}, "meta.rollout.per_minute"),
        ({"per_minute": 0}, "meta.rollout.per_minute"),
        ({"per_minute": "50"}, "meta.rollout.per_minute"),
        ({}, "meta.rollout.per_minute"),
        ([1], "meta.rollout"),
        ({"per_minute": 5, "abort": {"failed_percent": 101}}, "meta.rollout.abort.failed_percent"),
        ({"per_minute": 5, "abort": {"failed_percent": 0}}, "meta.rollout.abort.failed_percent"),
        (
            {"per_minute": 5, "window": {"start": "2026-12-10T05:00:00Z", "end": "2026-12-10T02:00:00Z"}},
            "meta.rollout.window.end",
        ),
        ({"per_minute": 5, "window": {"start": "tomorrow"}}, "meta.rollout.window.start"),
        ({"per_minute": 5, "speed": 3}, "meta.rollout.speed"),
        (
            {"per_minute": 5, "ramp": {"factor": 2, "every_succeeded": 10, "max_per_minute": 9, "x": 1}},
            "meta.rollout.ramp.x",
        ),
        (
            {"per_minute": 5, "ramp": {"factor": 1, "every_succeeded": 10, "max_per_minute": 9}},
            "meta.rollout.ramp.factor",
        ),
        (
            {"per_minute": 5, "ramp": {"factor": 2, "every_succeeded": 10, "max_per_minute": 4}},
            "meta.rollout.ramp.max_per_minute",
        ),
        ({"per_minute": 5, "retries": {"max": 2, "on": ["exploded"]}}, "meta.rollout.retries.on"),
        ({"per_minute": 5, "retries": {"max": -1}}, "meta.rollout.retries.max"),
        ({"per_minute": 5, "in_progress_timeout_seconds": 0}, "meta.rollout.in_progress_timeout_seconds"),
    ],
)
def test_bad_policies_are_400_naming_the_field(policy, field, make_device, master, client_for):
    d = make_device("a")
    answer = client_for(master).post("/pool/task", {"to": f"device:{d.pk}", "meta": {"rollout": policy}}, format="json")
    assert answer.status_code == 400, answer.json()
    assert answer.json()["code"] == "validation_error"
    assert field in answer.json()["extra"]["fields"], answer.json()
    assert field in answer.json()["message"] or len(answer.json()["extra"]["fields"]) > 1
    assert not Message.objects.filter(type="task").exists()


def test_the_issue_example_policy_is_accepted(make_device, master, client_for):
    d = make_device("a")
    policy = {
        "per_minute": 50,
        "ramp": {"factor": 2, "every_succeeded": 100, "max_per_minute": 1000},
        "abort": {"failed_percent": 10, "min_finished": 20},
        "in_progress_timeout_seconds": 900,
        "retries": {"max": 2, "on": ["failed", "timed_out"]},
        "window": {"start": "2026-12-10T02:00:00Z", "end": "2026-12-10T05:00:00Z"},
    }
    client = client_for(master)
    created = client.post("/pool/task", {"to": f"device:[{d.pk}]", "meta": {"rollout": policy}}, format="json")
    assert created.status_code == 201 and created.json()["meta"]["rollout"] == policy
    assert client.get(f"/pool/tasks/{created.json()['id']}").json()["state"] == "scheduled"


def test_the_step_is_scheduled_for_the_cluster(db):
    from django.utils.module_loading import import_string
    from django_q.models import Schedule

    from pool.conf import ROLLOUT_SCHEDULE
    from pool.tasks import rollouts_step

    schedule = Schedule.objects.get(name=ROLLOUT_SCHEDULE)
    assert (schedule.schedule_type, schedule.minutes, schedule.repeats) == (Schedule.MINUTES, 1, -1)
    assert import_string(schedule.func) is rollouts_step


@pytest.mark.slow
def test_two_clusters_stepping_at_once_never_release_a_delivery_twice(transactional_db):
    """Four processes (clusters) step one rollout at the same injected minutes: each minute releases
    exactly the rate in total, and every delivery is released once."""
    import json
    import subprocess
    import sys
    import time
    from collections import Counter
    from pathlib import Path

    from pool.services import device_create
    from tests.factories import UserFactory
    from tests.live import ROOT, server_env

    master = UserFactory(role="master")
    devices = [device_create(name=f"d{i}", validated=True)[0] for i in range(120)]
    task = rollout(master, devices, per_minute=25)
    worker = Path(__file__).with_name("rollout_worker.py")
    start_at = time.time() + 3  # all four begin together, after their imports
    procs = [
        subprocess.Popen(
            [sys.executable, str(worker), str(task.pk), str(start_at), "4"],
            stdout=subprocess.PIPE,
            env=server_env(),
            cwd=ROOT,
        )
        for _ in range(4)
    ]
    per_minute: Counter[int] = Counter()
    for proc in procs:
        out, _ = proc.communicate(timeout=240)
        assert proc.returncode == 0
        for minute_no, released in json.loads(out):
            per_minute[minute_no] += released
    assert dict(per_minute) == {0: 25, 1: 25, 2: 25, 3: 25}
    attempts = Counter(Delivery.objects.filter(task=task).values_list("attempts", flat=True))
    assert attempts == {1: 100, 0: 20}  # released once each; the rest still queued
    assert states(task) == {"pending": 100, "queued": 20}
    decisions = Message.objects.filter(type="info", parent_id=task.msg_id)
    assert decisions.count() == 4  # one decision a minute, whichever cluster made it
