"""`/webhooks/`: owners and admins manage subscriptions; the secret is shown once; URLs are checked."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from rest_framework.test import APIClient

from coordinator.models import AuditEntry, User
from tests.webhooks.conftest import Receiver
from webhooks.models import Subscription


def test_subscribe_shows_the_secret_once(
    user: User, client_for: Callable[[User], APIClient], receiver: Receiver, allow_private: None
) -> None:
    api = client_for(user)
    created = api.post("/webhooks/", {"url": receiver.url, "events": ["job.finished", "alert.raised"]}, format="json")
    assert created.status_code == 201
    body = created.json()
    assert body["secret"].startswith("whsec_") and len(body["secret"]) > 30
    assert body["events"] == ["job.finished", "alert.raised"]
    assert body["event_owner"] == user.pk  # a user's webhook only ever carries their own events
    listed = api.get("/webhooks/").json()
    assert [w["id"] for w in listed] == [body["id"]]
    assert "secret" not in listed[0]
    assert "secret" not in api.get(f"/webhooks/{body['id']}").json()
    given = api.post(
        "/webhooks/", {"url": receiver.url, "events": ["job.failed"], "secret": "my-own-secret-123456"}, format="json"
    )
    assert given.json()["secret"] == "my-own-secret-123456"


def test_change_rotate_and_delete(
    user: User, client_for: Callable[[User], APIClient], receiver: Receiver, allow_private: None
) -> None:
    api = client_for(user)
    hook = api.post("/webhooks/", {"url": receiver.url, "events": ["job.finished"]}, format="json").json()
    changed = api.patch(f"/webhooks/{hook['id']}", {"events": ["job.failed"], "rotate_secret": True}, format="json")
    assert changed.status_code == 200
    assert changed.json()["events"] == ["job.failed"]
    assert changed.json()["secret"] not in (hook["secret"], None)
    assert "secret" not in api.patch(f"/webhooks/{hook['id']}", {"enabled": False}, format="json").json()
    assert api.delete(f"/webhooks/{hook['id']}").status_code == 204
    assert api.get(f"/webhooks/{hook['id']}").status_code == 404


def test_only_owners_and_admins_see_a_webhook(
    user: User,
    master: User,
    admin: User,
    client_for: Callable[[User], APIClient],
    receiver: Receiver,
    allow_private: None,
) -> None:
    hook = client_for(user).post("/webhooks/", {"url": receiver.url, "events": ["job.finished"]}, format="json").json()
    other = client_for(master)
    for response in (
        other.get(f"/webhooks/{hook['id']}"),
        other.patch(f"/webhooks/{hook['id']}", {"url": "https://example.com/x"}, format="json"),
        other.delete(f"/webhooks/{hook['id']}"),
    ):
        assert response.status_code == 404
        assert response.json()["code"] == "webhook_not_found"
    assert other.get("/webhooks/").json() == []
    assert [w["id"] for w in client_for(admin).get("/webhooks/").json()] == [hook["id"]]
    assert client_for(admin).delete(f"/webhooks/{hook['id']}").status_code == 204
    assert APIClient().get("/webhooks/").status_code == 401


def test_a_user_cannot_follow_another_users_events(
    user: User, master: User, client_for: Callable[[User], APIClient], receiver: Receiver, allow_private: None
) -> None:
    response = client_for(user).post(
        "/webhooks/", {"url": receiver.url, "events": ["job.finished"], "event_owner": master.pk}, format="json"
    )
    assert response.status_code == 403
    assert not Subscription.objects.exists()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://localhost:8000/hook",
        "http://[::1]/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data/",  # a cloud's metadata service
        "http://0x7f000001/hook",  # 127.0.0.1 spelled as one number
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
        "http://100.64.0.1/hook",
        # IPv4 inside IPv6 transition addresses: a NAT64 gateway or a 6to4/Teredo relay forwards them
        "http://[64:ff9b::a00:1]/hook",  # NAT64 (well-known prefix) of 10.0.0.1
        "http://[64:ff9b:1::a9fe:a9fe]/hook",  # NAT64 (local-use prefix) of 169.254.169.254
        "http://[2002:7f00:1::]/hook",  # 6to4 of 127.0.0.1
        "http://[2001:0:4136:e378:8000:63bf:f5ff:fffe]/hook",  # Teredo of client 10.0.0.1
        "http://[::127.0.0.1]/hook",  # IPv4-compatible
        "http://[::ffff:0:a00:1]/hook",  # IPv4-translated
        "http://[fec0::1]/hook",  # site-local
    ],
)
def test_internal_addresses_are_refused(user: User, client_for: Callable[[User], APIClient], url: str) -> None:
    response = client_for(user).post("/webhooks/", {"url": url, "events": ["job.finished"]}, format="json")
    assert response.status_code == 400, response.json()
    assert response.json()["code"] == "validation_error"
    assert "url" in response.json()["extra"]["fields"]
    assert not Subscription.objects.exists()


def test_the_refusal_does_not_tell_what_an_internal_name_resolves_to(
    user: User, client_for: Callable[[User], APIClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The URL check was a DNS oracle: it named the internal address a host resolves to, and said
    apart names that do not resolve. Both now get the same answer, with no address in it."""
    import socket

    def internal_dns(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        if host == "db.intranet.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.5", port))]
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", internal_dns)
    api = client_for(user)
    answers = [
        api.post("/webhooks/", {"url": f"https://{host}/hook", "events": ["job.finished"]}, format="json")
        for host in ("db.intranet.example", "nowhere.intranet.example")
    ]
    assert [answer.status_code for answer in answers] == [400, 400]
    internal, unknown = (answer.json() for answer in answers)
    assert "10.0.0.5" not in str(internal)
    assert internal["extra"] == unknown["extra"] == {"fields": {"url": ["not_public"]}}
    assert internal["message"].replace("db.", "nowhere.") == unknown["message"]
    assert not Subscription.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://example.com/x", "events": ["job.finished"]}, "url"),
        ({"url": "file:///etc/passwd", "events": ["job.finished"]}, "url"),
        ({"url": "https://user:pw@example.com/x", "events": ["job.finished"]}, "url"),
        ({"url": "https://example.com/x", "events": []}, "events"),
        ({"url": "https://example.com/x", "events": ["job.exploded"]}, "events"),
        ({"url": "https://example.com/x", "events": "job.finished"}, "events"),
        ({"url": "https://example.com/x", "events": ["job.finished"], "secret": "short"}, "secret"),
        ({"events": ["job.finished"]}, "url"),
    ],
)
def test_bad_input_is_a_clear_400(
    user: User, client_for: Callable[[User], APIClient], body: dict[str, Any], field: str
) -> None:
    response = client_for(user).post("/webhooks/", body, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "validation_error"
    assert field in response.json()["extra"]["fields"]


@pytest.mark.django_db(transaction=True)
def test_each_webhook_change_writes_one_audit_entry(
    user: User, client_for: Callable[[User], APIClient], receiver: Receiver, allow_private: None
) -> None:
    api = client_for(user)
    hook = api.post("/webhooks/", {"url": receiver.url, "events": ["job.finished"]}, format="json").json()
    api.patch(f"/webhooks/{hook['id']}", {"rotate_secret": True}, format="json")
    api.delete(f"/webhooks/{hook['id']}")
    entries = list(AuditEntry.objects.order_by("id"))
    assert [e.action for e in entries] == ["webhook.create", "webhook.update", "webhook.delete"]
    assert all(e.actor_id == user.pk for e in entries)
    assert "whsec_" not in str([(e.before, e.after, e.details) for e in entries])  # secrets stay out


def test_hostile_ids_and_bodies_get_a_4xx(admin: User, client_for: Callable[[User], APIClient]) -> None:
    api = client_for(admin)
    huge = "9" * 40
    for response in (api.get(f"/webhooks/{huge}"), api.patch(f"/webhooks/{huge}", {}, format="json")):
        assert response.status_code == 404
    too_big = {"url": "https://example.com/x", "events": ["job.finished"], "event_owner": 10**30}
    assert api.post("/webhooks/", too_big, format="json").status_code == 400
    nobody = {"url": "https://example.com/x", "events": ["job.finished"], "event_owner": 2**62}
    assert api.post("/webhooks/", nobody, format="json").json()["extra"]["fields"] == {"event_owner": ["unknown"]}
    assert api.post("/webhooks/", "{not json", content_type="application/json").status_code == 400
    nul = {"url": "https://example.com/\x00", "events": ["job.finished"]}
    assert api.post("/webhooks/", nul, format="json").status_code == 400
    assert not Subscription.objects.exists()


def test_one_user_cannot_own_more_webhooks_than_the_cap(
    user: User, admin: User, client_for: Callable[[User], APIClient], settings: Any
) -> None:
    """Each event is queued once per matching webhook: thousands of webhooks of one user would
    flood the job queue (everyone's) and the receiving host."""
    settings.WEBHOOKS_PER_OWNER = 3
    body = {"url": "https://1.1.1.1/hook", "events": ["job.finished"]}
    for _ in range(3):
        assert client_for(user).post("/webhooks/", body, format="json").status_code == 201
    refused = client_for(user).post("/webhooks/", body, format="json")
    assert refused.status_code == 409
    assert refused.json()["code"] == "too_many_webhooks"
    assert Subscription.objects.filter(owner=user).count() == 3
    # the cap is per owner: another user still may
    assert client_for(admin).post("/webhooks/", body, format="json").status_code == 201
