from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import factory
from django.contrib.auth.hashers import make_password
from django.utils import timezone

from coordinator.models import Role, User
from webhooks.sealing import secret_seal

DEFAULT_PASSWORD = "correct-horse-battery"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    email = factory.Sequence(lambda n: f"user{n}@example.com")
    name = factory.Faker("name")
    role = Role.USER

    @factory.post_generation
    def password(obj: User, create: bool, extracted: Any, **kwargs: Any) -> None:  # noqa: N805
        obj.set_password(extracted or DEFAULT_PASSWORD)
        if create:
            obj.save()


# --- one factory for every model: rows as the services would leave them --------------------------
# Tests that exercise behaviour create rows through the services; these are for tests that need
# rows to exist (admin pages, selectors, exports, permissions).


class IdempotentAnswerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "coordinator.IdempotentAnswer"

    scope = factory.Sequence(lambda n: f"{n:064x}")
    key = factory.Sequence(lambda n: f"key-{n}")
    fingerprint = "0" * 64
    status = 201
    content = b'{"id": 1}'
    content_type = "application/json"


class DeviceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "pool.Device"

    name = factory.Sequence(lambda n: f"device-{n}")
    kind = "sensor"
    validated = True
    secret_hash = factory.LazyFunction(lambda: make_password("device-secret"))


class PoolMessageFactory(factory.django.DjangoModelFactory):
    """A message of the day log; `type` says which (task by default, to every device)."""

    class Meta:
        model = "pool.Message"

    sender = "admin@example.com"
    to = "all"
    type = "task"
    title = factory.Sequence(lambda n: f"task {n}")
    target_all = True


class PoolTaskFactory(PoolMessageFactory):
    class Meta:
        model = "pool.Task"


class DeliveryFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "pool.Delivery"

    task = factory.SubFactory(PoolTaskFactory, target_all=False)
    device = factory.SubFactory(DeviceFactory)


class RunFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "farm.Run"

    owner = factory.SubFactory(UserFactory)
    num_tasks = 10


class WorkerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "farm.Worker"

    uuid = factory.LazyFunction(lambda: uuid.uuid4().hex)
    owner = factory.SubFactory(UserFactory)
    hostname = "node-1"
    pid = factory.Sequence(lambda n: 1000 + n)


class FarmTaskFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "farm.Task"

    run = factory.SubFactory(RunFactory)
    task = factory.Sequence(lambda n: n % 10)


class JobFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "jobs.Job"

    type = "test.main.add"
    data = factory.LazyFunction(lambda: {"x": 1, "y": 2})
    created_by = factory.SubFactory(UserFactory)


class JobAttemptFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "jobs.JobAttempt"

    job = factory.SubFactory(JobFactory)
    worker = "host-1:0"
    finished_at = factory.LazyFunction(timezone.now)
    outcome = "failure"
    error = "RuntimeError: boom"


class JobFileFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "jobs.JobFile"

    filename = factory.Sequence(lambda n: f"export-{n}.csv")
    owner = factory.SubFactory(UserFactory)
    format = "csv"


class ProgressEventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "progress.ProgressEvent"

    topic = factory.Sequence(lambda n: f"run:{n}")
    kind = "new"
    created_at = factory.LazyFunction(timezone.now)


class ProgressTopicFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "progress.ProgressTopic"

    topic = factory.Sequence(lambda n: f"run:{n}")
    name = factory.Sequence(lambda n: f"run {n}")
    started_at = factory.LazyFunction(timezone.now)
    updated_at = factory.LazyFunction(timezone.now)


class StreamLeaseFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "progress.StreamLease"

    user = factory.SubFactory(UserFactory)
    slot = 0
    expires_at = factory.LazyFunction(lambda: timezone.now() + timedelta(seconds=45))


class AuditEntryFactory(factory.django.DjangoModelFactory):
    """Append-only: create (or build) only; saving an existing entry raises."""

    class Meta:
        model = "coordinator.AuditEntry"

    actor = factory.SubFactory(UserFactory)
    actor_label = factory.LazyAttribute(lambda o: o.actor.email if o.actor else "")
    address = "127.0.0.1"
    action = "device.update"
    target_type = "pool.device"
    target_id = factory.Sequence(str)
    target_label = factory.Sequence(lambda n: f"device-{n}")
    before = factory.LazyFunction(lambda: {"validated": False})
    after = factory.LazyFunction(lambda: {"validated": True})
    details = factory.LazyFunction(list)


class MetricMinuteFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "coordinator.MetricMinute"

    series = "jobs.queued"
    minute = factory.Sequence(lambda n: (int(timezone.now().timestamp()) // 60 - n) * 60)
    value = 1.0


class DeviceTagFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "pool.DeviceTag"

    device = factory.SubFactory(DeviceFactory)
    slug = factory.Sequence(lambda n: f"tag-{n}")


class DeviceGroupFactory(factory.django.DjangoModelFactory):
    """A group; pass `devices=[...]` to fill it."""

    class Meta:
        model = "pool.DeviceGroup"
        skip_postgeneration_save = True

    slug = factory.Sequence(lambda n: f"group-{n}")
    name = factory.Sequence(lambda n: f"group {n}")

    @factory.post_generation
    def devices(obj: Any, create: bool, extracted: Any, **kwargs: Any) -> None:  # noqa: N805
        if create and extracted:
            obj.devices.set(extracted)


class JobScheduleFactory(factory.django.DjangoModelFactory):
    """An hourly interval schedule (exactly one of cron, interval_seconds, run_at is set)."""

    class Meta:
        model = "jobs.JobSchedule"

    owner = factory.SubFactory(UserFactory)
    type = "test.main.add"
    data = factory.LazyFunction(lambda: {"x": 1, "y": 2})
    interval_seconds = 3600
    next_run_at = factory.LazyFunction(lambda: timezone.now() + timedelta(hours=1))


class JobScheduleRunFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "jobs.JobScheduleRun"

    schedule = factory.SubFactory(JobScheduleFactory)
    occurrence = factory.Sequence(lambda n: timezone.now().replace(microsecond=0) - timedelta(hours=n + 1))
    job = factory.SubFactory(JobFactory, created_by=factory.SelfAttribute("..schedule.owner"))


class WatchRuleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "progress.WatchRule"

    name = factory.Sequence(lambda n: f"silent runs {n}")
    kind = "silent"
    pattern = "run:*"
    minutes = 10


class WatchMarkFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "progress.WatchMark"

    rule = factory.SubFactory(WatchRuleFactory, kind="stalled")
    topic = factory.Sequence(lambda n: f"run:{n}")
    value = 42
    since = factory.LazyFunction(timezone.now)


class AlertFactory(factory.django.DjangoModelFactory):
    """An open alert raised by a watchdog rule."""

    class Meta:
        model = "progress.Alert"

    rule = factory.SubFactory(WatchRuleFactory)
    topic = factory.Sequence(lambda n: f"run:{n}")
    key = factory.LazyAttribute(lambda o: f"rule:{o.rule.pk}:{o.topic}" if o.rule else f"test:{o.topic}")
    message = factory.LazyAttribute(lambda o: f"{o.topic}: no event for 10 minutes")
    raised_at = factory.LazyFunction(timezone.now)


class DurationSampleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "progress.DurationSample"

    key = factory.Sequence(lambda n: f"job:test.main.add-{n}")
    seconds = factory.LazyFunction(lambda: [12.0, 15.5, 30.0])


class WebhookSubscriptionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "webhooks.Subscription"

    owner = factory.SubFactory(UserFactory)
    url = factory.Sequence(lambda n: f"https://hooks.example.com/{n}")
    events = factory.LazyFunction(lambda: ["job.finished", "job.failed"])
    event_owner = factory.SelfAttribute("owner")
    secret_sealed = factory.Sequence(lambda n: secret_seal(f"whsec_test-secret-{n}"))


class WebhookDeliveryFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "webhooks.Delivery"

    subscription = factory.SubFactory(WebhookSubscriptionFactory)
    event_id = factory.LazyFunction(uuid.uuid4)
    event_type = "job.finished"
    payload = factory.LazyAttribute(
        lambda o: {
            "id": str(o.event_id),
            "type": o.event_type,
            "created_at": timezone.now().isoformat(),
            "data": {"job": 1, "status": "finished"},
        }
    )
