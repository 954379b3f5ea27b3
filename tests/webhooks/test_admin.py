"""Webhooks in the admin: the secret is shown once, internal URLs are refused, changes are audited."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from coordinator.models import AuditEntry, User
from tests.webhooks.conftest import Receiver
from webhooks.models import Subscription
from webhooks.sealing import secret_unseal


@pytest.fixture
def staff(admin: User) -> Client:
    client = Client()
    client.force_login(admin)
    return client


def test_adding_a_webhook_shows_its_secret_once(
    staff: Client, admin: User, receiver: Receiver, allow_private: None
) -> None:
    form = {"owner": admin.pk, "url": receiver.url, "events": ["job.failed", "alert.raised"], "enabled": "on"}
    response = staff.post(reverse("admin:webhooks_subscription_add"), form, follow=True)
    subscription = Subscription.objects.get()
    secret = re.search(r"shown only now: (\S+?)<", response.content.decode()).group(1)
    assert secret == secret_unseal(subscription.secret_sealed)
    assert subscription.events == ["job.failed", "alert.raised"]
    page = staff.get(reverse("admin:webhooks_subscription_change", args=[subscription.pk])).content.decode()
    assert secret not in page


def test_the_admin_refuses_internal_urls(staff: Client, admin: User, settings: Any) -> None:
    settings.WEBHOOKS_ALLOW_PRIVATE = False
    form = {"owner": admin.pk, "url": "http://127.0.0.1:6379/", "events": ["job.failed"], "enabled": "on"}
    response = staff.post(reverse("admin:webhooks_subscription_add"), form)
    assert response.status_code == 200
    assert "not public" in response.content.decode()
    assert not Subscription.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_an_admin_change_is_one_audit_entry(
    staff: Client, admin: User, receiver: Receiver, allow_private: None
) -> None:
    form = {"owner": admin.pk, "url": receiver.url, "events": ["job.failed"], "enabled": "on"}
    staff.post(reverse("admin:webhooks_subscription_add"), form)
    [entry] = AuditEntry.objects.all()
    assert sorted([entry.action, *(d["action"] for d in entry.details)]) == ["admin.add", "webhook.create"]
    assert entry.actor_id == admin.pk


def test_editing_a_webhook_in_the_admin(staff: Client, admin: User, receiver: Receiver, allow_private: None) -> None:
    from webhooks.services import subscription_create

    subscription, _ = subscription_create(owner=admin, url=receiver.url, events=["job.failed"])
    url = reverse("admin:webhooks_subscription_change", args=[subscription.pk])
    form = {"url": receiver.url + "&v=2", "events": ["job.failed", "run.finished"]}
    assert staff.post(url, form).status_code == 302
    subscription.refresh_from_db()
    assert (subscription.url.endswith("&v=2"), subscription.events) == (True, ["job.failed", "run.finished"])
    assert not subscription.enabled  # the box was left unticked


def test_the_admin_refuses_a_webhook_past_the_owners_cap(staff: Client, user: User, settings: Any) -> None:
    settings.WEBHOOKS_PER_OWNER = 1
    form = {"owner": user.pk, "url": "https://1.1.1.1/hook", "events": ["job.failed"], "enabled": "on"}
    assert staff.post(reverse("admin:webhooks_subscription_add"), form).status_code == 302
    response = staff.post(reverse("admin:webhooks_subscription_add"), form)
    assert response.status_code == 200
    assert "At most 1 webhooks per user" in response.content.decode()
    assert Subscription.objects.filter(owner=user).count() == 1


def test_staff_without_the_admin_role_cannot_add_a_webhook_owned_by_an_admin(admin: User, settings: Any) -> None:
    """An admin's webhook carries every user's events: staff allowed to add webhooks get their own only."""
    from django.contrib.auth.models import Permission

    from tests.factories import UserFactory

    staff_user = UserFactory(is_staff=True)
    staff_user.user_permissions.set(Permission.objects.filter(codename__in=["add_subscription", "view_subscription"]))
    client = Client()
    client.force_login(staff_user)
    form = {"owner": admin.pk, "url": "https://1.1.1.1/hook", "events": ["job.failed"], "enabled": "on"}
    response = client.post(reverse("admin:webhooks_subscription_add"), form)
    assert response.status_code == 200  # the form refuses the choice
    assert not Subscription.objects.exists()
    assert client.post(reverse("admin:webhooks_subscription_add"), {**form, "owner": staff_user.pk}).status_code == 302
    assert Subscription.objects.get().owner == staff_user


def test_staff_without_the_admin_role_cannot_take_over_an_admins_webhook(admin: User) -> None:
    """Staff who may change webhooks pointed an admin's webhook (every user's events) at their own
    server and rotated its secret; an admin's webhook is changed only by admins."""
    from django.contrib.auth.models import Permission

    from tests.factories import UserFactory
    from webhooks.services import subscription_create

    subscription, secret = subscription_create(owner=admin, url="https://1.1.1.1/hook", events=["job.failed"])
    staff_user = UserFactory(is_staff=True)
    codenames = ["view_subscription", "change_subscription", "delete_subscription"]
    staff_user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    client = Client()
    client.force_login(staff_user)
    url = reverse("admin:webhooks_subscription_change", args=[subscription.pk])
    events = ["job.finished", "job.failed", "run.finished", "device_task.finished"]
    client.post(url, {"url": "https://8.8.8.8/steal", "events": events, "enabled": "on"})
    listing = reverse("admin:webhooks_subscription_changelist")
    page = client.post(listing, {"action": "rotate_secret", "_selected_action": [subscription.pk]}, follow=True)
    assert "shown only now" not in page.content.decode()
    client.post(listing, {"action": "delete_selected", "_selected_action": [subscription.pk], "post": "yes"})
    client.post(reverse("admin:webhooks_subscription_delete", args=[subscription.pk]), {"post": "yes"})
    subscription.refresh_from_db()
    assert (subscription.url, subscription.events, secret_unseal(subscription.secret_sealed)) == (
        "https://1.1.1.1/hook",
        ["job.failed"],
        secret,
    )
    # Their own webhooks they still change.
    own, _ = subscription_create(owner=staff_user, url="https://1.1.1.1/mine", events=["job.failed"])
    own_url = reverse("admin:webhooks_subscription_change", args=[own.pk])
    assert (
        client.post(own_url, {"url": "https://1.1.1.1/v2", "events": ["job.failed"], "enabled": "on"}).status_code
        == 302
    )
    own.refresh_from_db()
    assert own.url == "https://1.1.1.1/v2"
