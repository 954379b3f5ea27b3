"""Signing secrets at rest: stored encrypted, still signing deliveries, readable after a key change
while the old key is listed, refused (not retried) once no key opens them, and the data migration
that seals the secrets stored in clear before."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from coordinator.models import User
from jobs.models import Job
from tests.webhooks.conftest import Receiver
from tests.webhooks.test_services import deliver, finish_a_job, verify
from webhooks.models import Delivery, Subscription
from webhooks.sealing import secret_unseal
from webhooks.services import subscription_create, subscription_update


def raw_row(pk: int) -> str:
    """What the database holds, as a copy of it would show."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM webhooks_subscription WHERE id = %s", [pk])
        return repr(cursor.fetchone())


def test_the_database_holds_no_secret_in_clear_and_deliveries_still_verify(
    user: User, receiver: Receiver, allow_private: None
) -> None:
    subscription, secret = subscription_create(owner=user, url=receiver.url, events=["job.finished"])
    given = "my-own-secret-123456"
    subscription_update(subscription=subscription, secret=given)
    assert secret not in raw_row(subscription.pk) and given not in raw_row(subscription.pk)
    finish_a_job(user)
    assert deliver(Delivery.objects.get()) == Job.Status.SUCCESS
    assert verify(given, receiver.received[0])


def test_a_new_key_first_keeps_old_secrets_working_and_a_removed_key_refuses_delivery(
    user: User, receiver: Receiver, allow_private: None, settings: Any
) -> None:
    settings.WEBHOOKS_SECRET_KEYS = ["old-key-" + "x" * 40]
    subscription, secret = subscription_create(owner=user, url=receiver.url, events=["job.finished"])
    settings.WEBHOOKS_SECRET_KEYS = ["new-key-" + "y" * 40, "old-key-" + "x" * 40]
    finish_a_job(user)
    assert deliver(Delivery.objects.get()) == Job.Status.SUCCESS
    assert verify(secret, receiver.received[0])

    settings.WEBHOOKS_SECRET_KEYS = ["new-key-" + "y" * 40]
    finish_a_job(user)
    second = Delivery.objects.exclude(status=Delivery.Status.DELIVERED).get()
    deliver(second)
    second.refresh_from_db()
    # Retrying cannot mend it: refused at once, with what to do, and nothing sent unsigned.
    assert second.status == Delivery.Status.REFUSED and "give it a new secret" in second.error
    assert len(receiver.received) == 1
    _, renewed = subscription_update(subscription=Subscription.objects.get(), rotate_secret=True)
    assert renewed is not None and secret_unseal(Subscription.objects.get().secret_sealed) == renewed


@pytest.mark.django_db(transaction=True)
def test_the_migration_seals_secrets_stored_in_clear_and_going_back_unseals_them(user: User) -> None:
    before, after = [("webhooks", "0001_subscriptions_and_deliveries")], [("webhooks", "0002_seal_secrets")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    old = executor.loader.project_state(before).apps.get_model("webhooks", "Subscription")
    row = old.objects.create(owner_id=user.pk, url="https://example.com/hook", events=["job.failed"], secret="s" * 30)
    try:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(after)
        sealed = Subscription.objects.get(pk=row.pk).secret_sealed
        assert "s" * 30 not in raw_row(row.pk) and secret_unseal(sealed) == "s" * 30
        executor = MigrationExecutor(connection)
        executor.migrate(before)
        assert old.objects.get(pk=row.pk).secret == "s" * 30
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())
