from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import factory
from django.contrib.auth.hashers import make_password
from django.utils import timezone

from coordinator.models import Role, User

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
