"""Deliveries: signed, retried on failure, redelivered on demand, never sent to internal addresses."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from coordinator.models import User
from jobs.models import Job
from jobs.services import job_create, job_execute
from progress.services import progress_publish
from tests.webhooks.conftest import Receiver
from webhooks.models import Delivery, Subscription
from webhooks.services import DISABLE_AFTER_FAILURES, subscription_create


def finish_a_job(user: User | None) -> Job:
    job = job_create(type="noop", data={}, user=user)
    job_execute(job_id=job.pk)
    return job


def deliver(delivery: Delivery) -> str:
    """Run the delivery's job now (as the cluster would when its backoff has passed)."""
    delivery.refresh_from_db()
    Job.objects.filter(pk=delivery.job_id).update(run_after=None)
    return job_execute(job_id=delivery.job_id)


def verify(secret: str, request: dict[str, Any]) -> bool:
    """The receiver's check, as docs/operations.md gives it."""
    timestamp = request["headers"]["X-Coordinator-Timestamp"]
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + request["body"], hashlib.sha256).hexdigest()
    return hmac.compare_digest(f"sha256={expected}", request["headers"]["X-Coordinator-Signature"])


def test_a_finished_job_is_posted_signed(user: User, receiver: Receiver, allow_private: None) -> None:
    subscription, secret = subscription_create(owner=user, url=receiver.url, events=["job.finished"])
    job = finish_a_job(user)
    [delivery] = Delivery.objects.all()
    assert deliver(delivery) == Job.Status.SUCCESS
    [request] = receiver.received
    assert request["path"] == "/hook?source=test"
    assert verify(secret, request)
    assert not verify(secret + "x", request)
    body = json.loads(request["body"])
    assert set(body) == {"id", "type", "created_at", "data"}
    assert body["type"] == request["headers"]["X-Coordinator-Event"] == "job.finished"
    assert body["data"] == {"job_id": job.pk, "type": "noop", "status": "success", "error": ""}
    delivery.refresh_from_db()
    assert (delivery.status, delivery.response_code, delivery.attempts) == ("delivered", 200, 1)
    assert delivery.duration_ms is not None
    # the delivery's own job finishing announces nothing (no webhook loop)
    assert Delivery.objects.count() == 1


def test_a_failing_receiver_is_retried_with_backoff(user: User, receiver: Receiver, allow_private: None) -> None:
    subscription, _ = subscription_create(owner=user, url=receiver.url, events=["job.finished", "job.failed"])
    receiver.answers = [500]
    finish_a_job(user)
    [delivery] = Delivery.objects.all()
    assert deliver(delivery) == Job.Status.FRESH  # failed, queued again for later
    delivery.refresh_from_db()
    assert (delivery.status, delivery.response_code) == ("retrying", 500)
    retry = Job.objects.get(pk=delivery.job_id)
    assert retry.run_after is not None and retry.run_after > retry.updated_on  # waits before the next attempt
    subscription.refresh_from_db()
    assert subscription.consecutive_failures == 1
    assert deliver(delivery) == Job.Status.SUCCESS
    delivery.refresh_from_db()
    assert (delivery.status, delivery.response_code, delivery.attempts) == ("delivered", 200, 2)
    assert len(receiver.received) == 2
    assert len({json.loads(r["body"])["id"] for r in receiver.received}) == 1  # the same event, sent again
    subscription.refresh_from_db()
    assert subscription.consecutive_failures == 0


def test_staff_redeliver_from_the_log(admin: User, user: User, receiver: Receiver, allow_private: None) -> None:
    subscription_create(owner=user, url=receiver.url, events=["job.finished"])
    finish_a_job(user)
    [delivery] = Delivery.objects.all()
    deliver(delivery)
    staff = Client()
    staff.force_login(admin)
    page = staff.get(reverse("admin:webhooks_delivery_changelist")).content.decode()
    assert "delivered" in page.lower() and "200" in page
    staff.post(
        reverse("admin:webhooks_delivery_changelist"), {"action": "redeliver", "_selected_action": [delivery.pk]}
    )
    first_job = delivery.job_id
    delivery.refresh_from_db()
    assert delivery.job_id != first_job and delivery.status == "pending"
    deliver(delivery)
    assert len(receiver.received) == 2
    assert json.loads(receiver.received[0]["body"]) == json.loads(receiver.received[1]["body"])


def test_other_owners_events_are_not_sent(user: User, master: User, receiver: Receiver, allow_private: None) -> None:
    subscription_create(owner=user, url=receiver.url, events=["job.finished"])
    finish_a_job(master)
    finish_a_job(None)
    assert not Delivery.objects.exists()
    finish_a_job(user)
    assert Delivery.objects.count() == 1


def test_an_admin_may_follow_everyone_or_one_user(
    admin: User, user: User, receiver: Receiver, allow_private: None
) -> None:
    everyone, _ = subscription_create(owner=admin, url=receiver.url, events=["job.failed", "job.finished"])
    only_user, _ = subscription_create(owner=admin, url=receiver.url, events=["job.finished"], event_owner=user)
    finish_a_job(None)
    finish_a_job(user)
    assert sorted(Delivery.objects.values_list("subscription_id", flat=True)) == sorted(
        [everyone.pk, everyone.pk, only_user.pk]
    )


def test_other_event_types_map_from_their_topics(admin: User, receiver: Receiver, allow_private: None) -> None:
    subscription_create(
        owner=admin, url=receiver.url, events=["run.finished", "device_task.finished", "rollout.aborted"]
    )
    progress_publish(topic="run:abc", kind="end", text="", state={"num_done": 3})
    progress_publish(topic="run:gone", kind="end", text="run deleted")  # deleted, not finished
    progress_publish(topic="pooltask:m1", kind="end", text="", state={"counts": {"done": 1}})
    progress_publish(topic="pooltask:m7", kind="end", text="aborted: 2 of 2 failed", state={"aborted": "2 of 2 failed"})
    progress_publish(topic="run:abc", kind="msg", text="50%", state={"num_done": 1})
    assert sorted(Delivery.objects.values_list("event_type", flat=True)) == [
        "device_task.finished",
        "rollout.aborted",
        "run.finished",
    ]


def test_private_addresses_are_refused_again_at_delivery(
    user: User, receiver: Receiver, allow_private: None, settings: Any
) -> None:
    subscription_create(owner=user, url=receiver.url, events=["job.finished"])
    finish_a_job(user)
    [delivery] = Delivery.objects.all()
    settings.WEBHOOKS_ALLOW_PRIVATE = False  # e.g. the name now resolves to an internal address
    deliver(delivery)
    delivery.refresh_from_db()
    assert delivery.status == "refused"
    assert "not public" in delivery.error
    assert receiver.received == []


def test_a_subscription_is_disabled_after_repeated_failures(
    user: User, receiver: Receiver, allow_private: None
) -> None:
    subscription, _ = subscription_create(owner=user, url=receiver.url, events=["job.finished"])
    Subscription.objects.filter(pk=subscription.pk).update(consecutive_failures=DISABLE_AFTER_FAILURES - 1)
    receiver.answers = [503]
    finish_a_job(user)
    [delivery] = Delivery.objects.all()
    deliver(delivery)
    subscription.refresh_from_db()
    assert not subscription.enabled
    assert f"{DISABLE_AFTER_FAILURES} failed deliveries" in subscription.disabled_reason
    # its retry is skipped, and no new event is queued for it
    deliver(delivery)
    delivery.refresh_from_db()
    assert delivery.status == "skipped"
    assert len(receiver.received) == 1
    finish_a_job(user)
    assert Delivery.objects.count() == 1


def test_alerts_are_sent_when_raised_and_resolved(admin: User, receiver: Receiver, allow_private: None) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from progress.models import WatchRule
    from progress.watchdog import watchdog_sweep
    from tests.factories import ProgressTopicFactory

    subscription_create(owner=admin, url=receiver.url, events=["alert.raised", "alert.resolved"])
    WatchRule.objects.create(name="quiet streams", kind="silent", pattern="stream:*", minutes=5)
    then = timezone.now() - timedelta(hours=1)
    ProgressTopicFactory(topic="stream:3", started_at=then, updated_at=then)
    watchdog_sweep(now=then + timedelta(minutes=6))
    progress_publish(topic="stream:3", kind="msg", text="back")
    watchdog_sweep(now=timezone.now() + timedelta(minutes=1))
    for delivery in Delivery.objects.order_by("id"):
        deliver(delivery)
    bodies = [json.loads(r["body"]) for r in receiver.received]
    assert [b["type"] for b in bodies] == ["alert.raised", "alert.resolved"]
    assert bodies[0]["data"]["topic"] == "stream:3" and bodies[0]["data"]["rule"] == "quiet streams"
    assert bodies[1]["data"]["resolved_at"] is not None


def test_disabling_raises_a_notice_that_enabling_resolves(user: User, receiver: Receiver, allow_private: None) -> None:
    from progress.selectors import alert_list_open
    from webhooks.services import subscription_update

    subscription, _ = subscription_create(owner=user, url=receiver.url, events=["job.finished"])
    Subscription.objects.filter(pk=subscription.pk).update(consecutive_failures=DISABLE_AFTER_FAILURES - 1)
    receiver.answers = [500]
    finish_a_job(user)
    deliver(Delivery.objects.get())
    [notice] = alert_list_open()
    assert notice.key == f"webhook:{subscription.pk}" and "disabled" in notice.message
    subscription_update(subscription=subscription, enabled=True)
    assert list(alert_list_open()) == []
    subscription.refresh_from_db()
    assert subscription.enabled and subscription.consecutive_failures == 0


def test_a_deactivated_owners_webhook_receives_nothing_and_stops_nobody_elses(
    admin: User, user: User, receiver: Receiver, allow_private: None
) -> None:
    """A former admin's webhook must not receive every user's events once they leave, nor make the
    event fail for every other subscriber (their delivery job cannot be created)."""
    subscription_create(owner=admin, url=receiver.url, events=["job.finished"])
    mine, _ = subscription_create(owner=user, url=receiver.url, events=["job.finished"])
    admin.is_active = False
    admin.save()
    finish_a_job(user)
    [delivery] = Delivery.objects.all()
    assert delivery.subscription_id == mine.pk
    assert deliver(delivery) == Job.Status.SUCCESS
    assert len(receiver.received) == 1


def test_a_rollout_that_aborts_fires_rollout_aborted_with_its_reason(
    master: User, receiver: Receiver, allow_private: None
) -> None:
    from pool.rollouts import rollout_step
    from pool.services import device_create, response_create, task_create

    devices = [device_create(name=f"d{i}", kind="x", validated=True)[0] for i in range(4)]
    ids = ",".join(str(d.pk) for d in devices)
    policy = {"per_minute": 4, "abort": {"failed_percent": 50, "min_finished": 2}}
    subscription_create(owner=master, url=receiver.url, events=["rollout.aborted", "device_task.finished"])
    task = task_create(user=master, to=f"device:[{ids}]", title="fw", meta={"rollout": policy})
    rollout_step(task_id=task.pk)
    for device in devices[:2]:
        response_create(device=device, parent_id=task.msg_id, status="failed")
    rollout_step(task_id=task.pk)
    delivery = Delivery.objects.get()
    assert delivery.event_type == "rollout.aborted"
    assert delivery.payload["data"]["task"] == task.msg_id and "2 of 2" in delivery.payload["data"]["reason"]


@pytest.mark.django_db(transaction=True)
def test_concurrent_creates_cannot_pass_the_webhook_cap_together(user: User, settings: Any) -> None:
    """The cap counts, then inserts: creates that all counted below it must not each add one."""
    import threading

    from django.db import connection

    from webhooks.errors import TooManyWebhooksError

    settings.WEBHOOKS_PER_OWNER = 3
    start = threading.Barrier(8)
    refused: list[str] = []

    def create() -> None:
        start.wait()
        try:
            subscription_create(owner=user, url="https://1.1.1.1/hook", events=["job.failed"])
        except TooManyWebhooksError as exc:
            refused.append(exc.code)
        finally:
            connection.close()

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Subscription.objects.filter(owner=user).count() == 3
    assert refused == ["too_many_webhooks"] * 5
