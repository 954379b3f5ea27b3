from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from tests.conftest import access_token_for
from tests.progress.conftest import publish, run, ws_connect, ws_receive_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_anonymous_is_refused_with_4401(db: None) -> None:
    async def body() -> None:
        communicator, connected, _ = await ws_connect()
        assert connected
        closed = await communicator.receive_output(timeout=5)
        assert closed == {"type": "websocket.close", "code": 4401}

    run(body)


def test_bad_token_is_refused_with_4401(db: None) -> None:
    async def body() -> None:
        communicator, _, _ = await ws_connect("/ws/progress/?token=not-a-jwt")
        assert (await communicator.receive_output(timeout=5))["code"] == 4401

    run(body)


def test_token_of_inactive_user_is_refused_with_4403(user) -> None:
    user.is_active = False
    user.save()
    token = access_token_for(user)

    async def body() -> None:
        communicator, _, _ = await ws_connect(f"/ws/progress/?token={token}")
        assert (await communicator.receive_output(timeout=5))["code"] == 4403

    run(body)


def test_admin_subscribes_and_receives_snapshot_then_live_events(admin) -> None:
    publish("run:abc", "new", "My run", {"percent": 0})
    publish("run:abc", "msg", "half", {"percent": 50})
    token = access_token_for(admin)

    async def body() -> None:
        communicator, _, _ = await ws_connect(f"/ws/progress/?token={token}")
        await communicator.send_json_to({"type": "subscribe", "topics": ["run:abc"]})
        got = await ws_receive_until(communicator, lambda m: m["type"] == "event")
        assert got[0] == {"type": "subscribed", "topics": ["run:abc"]}
        snapshot = got[-1]
        assert snapshot["snapshot"] is True
        assert (snapshot["kind"], snapshot["text"], snapshot["state"]) == ("msg", "half", {"percent": 50})
        await sync_to_async(publish)("run:other", "msg", "not subscribed")
        await sync_to_async(publish)("run:abc", "msg", "three quarters", {"percent": 75})
        live = (await ws_receive_until(communicator, lambda m: m["type"] == "event"))[-1]
        assert (live["topic"], live["text"], live["state"]) == ("run:abc", "three quarters", {"percent": 75})
        await communicator.send_json_to({"type": "unsubscribe", "topics": ["run:abc"]})
        assert (await ws_receive_until(communicator, lambda m: True))[-1] == {"type": "subscribed", "topics": []}
        await sync_to_async(publish)("run:abc", "end", "")
        assert await communicator.receive_nothing(timeout=0.3)
        await communicator.disconnect()

    run(body)


def test_user_sees_only_own_topics_even_with_star(user, admin) -> None:
    token = access_token_for(user)

    async def body() -> None:
        communicator, _, _ = await ws_connect(f"/ws/progress/?token={token}")
        await communicator.send_json_to({"type": "subscribe", "topics": ["*"]})
        await ws_receive_until(communicator, lambda m: m["type"] == "subscribed")
        await sync_to_async(publish)("job:1", "msg", "someone else's", owner_id=admin.pk)
        await sync_to_async(publish)("stream:0", "new", "socket stream")
        await sync_to_async(publish)("job:2", "msg", "mine", owner_id=user.pk)
        event = (await ws_receive_until(communicator, lambda m: m["type"] == "event"))[-1]
        assert (event["topic"], event["text"]) == ("job:2", "mine")
        assert "owner_id" not in event
        await communicator.disconnect()

    run(body)


def test_session_cookie_authenticates(admin, client) -> None:
    client.force_login(admin)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()

    async def body() -> None:
        communicator, _, _ = await ws_connect(headers=[(b"cookie", cookie)])
        await communicator.send_json_to({"type": "subscribe", "topics": ["stream:3"]})
        assert (await ws_receive_until(communicator, lambda m: True))[-1]["type"] == "subscribed"
        await sync_to_async(publish)("stream:3", "new", "socket task")
        event = (await ws_receive_until(communicator, lambda m: m["type"] == "event"))[-1]
        assert (event["kind"], event["text"]) == ("new", "socket task")
        await communicator.disconnect()

    run(body)


@pytest.mark.parametrize(
    "message",
    [
        "not json",
        '{"type": "dance"}',
        '{"type": "subscribe", "topics": "x"}',
        '{"type": "subscribe", "topics": [""]}',
        '{"type": "subscribe", "topics": ["a"], "since": -1}',
        '{"type": "subscribe", "topics": ["a"], "since": 99999999999999999999999}',
    ],
)
def test_malformed_messages_get_an_error_and_the_connection_stays(admin, message) -> None:
    token = access_token_for(admin)

    async def body() -> None:
        communicator, _, _ = await ws_connect(f"/ws/progress/?token={token}")
        await communicator.send_to(text_data=message)
        error = (await ws_receive_until(communicator, lambda m: True))[-1]
        assert error["type"] == "error" and error["code"] == "bad_request"
        await communicator.send_json_to({"type": "subscribe", "topics": ["a"]})
        assert (await ws_receive_until(communicator, lambda m: True))[-1] == {"type": "subscribed", "topics": ["a"]}
        await communicator.disconnect()

    run(body)


def test_since_replays_missed_events(admin) -> None:
    first = publish("job:9", "new", "export", owner_id=None)
    publish("job:9", "msg", "10%")
    publish("job:9", "msg", "20%")
    token = access_token_for(admin)

    async def body() -> None:
        communicator, _, _ = await ws_connect(f"/ws/progress/?token={token}")
        await communicator.send_json_to({"type": "subscribe", "topics": ["job:9"], "since": first})
        got = await ws_receive_until(communicator, lambda m: m.get("text") == "20%")
        assert [m["text"] for m in got if m["type"] == "event"] == ["10%", "20%"]
        await communicator.disconnect()

    run(body)


def test_an_open_socket_closes_once_its_user_is_deactivated(user, monkeypatch) -> None:
    monkeypatch.setattr("progress.conf.KEEPALIVE_SECONDS", 0.05)
    token = access_token_for(user)

    def deactivate() -> None:
        user.is_active = False
        user.save()

    async def body() -> None:
        communicator, connected, _ = await ws_connect(f"/ws/progress/?token={token}")
        assert connected
        await sync_to_async(deactivate)()
        while (message := await communicator.receive_output(timeout=20))["type"] != "websocket.close":
            pass
        assert message["code"] == 4401

    run(body)


@pytest.mark.parametrize(
    ("origin", "host", "allowed"),
    [
        (b"http://127.0.0.1:8000", b"127.0.0.1:8000", True),
        (b"http://127.0.0.1:9999", b"127.0.0.1:8000", False),  # another application on this host
        (b"http://127.0.0.1", b"127.0.0.1:8000", False),
        (b"http://evil.example:8000", b"127.0.0.1:8000", False),
    ],
)
def test_a_websocket_from_a_page_on_another_port_is_refused(admin, origin, host, allowed) -> None:
    token = access_token_for(admin)

    async def body() -> bool:
        communicator, connected, _ = await ws_connect(
            f"/ws/progress/?token={token}", headers=[(b"origin", origin), (b"host", host)]
        )
        await communicator.disconnect()
        return connected

    assert run(body) is allowed


def test_a_trusted_origin_may_open_a_websocket_behind_a_proxy_that_rewrites_host(admin, settings) -> None:
    settings.CSRF_TRUSTED_ORIGINS = ["https://localhost:8443"]  # the address browsers use; nginx forwards to :8001
    token = access_token_for(admin)

    async def body() -> bool:
        communicator, connected, _ = await ws_connect(
            f"/ws/progress/?token={token}",
            headers=[(b"origin", b"https://localhost:8443"), (b"host", b"127.0.0.1:8001")],
        )
        await communicator.disconnect()
        return connected

    assert run(body) is True


def test_a_websocket_past_the_users_stream_limit_is_closed_with_4429(user, settings) -> None:
    settings.PROGRESS_STREAMS_PER_USER = 1
    token = access_token_for(user)

    async def body() -> int:
        first, connected, _ = await ws_connect(f"/ws/progress/?token={token}")
        assert connected
        second, _, _ = await ws_connect(f"/ws/progress/?token={token}")
        closed = await second.receive_output(timeout=5)
        await first.disconnect()
        return int(closed["code"])

    assert run(body) == 4429


def test_staff_who_may_only_view_follow_the_operations_dashboard_and_plain_users_never_do(
    user, admin, settings
) -> None:
    from django.contrib.auth.models import Permission
    from django.core.cache import cache

    from coordinator.models import Role
    from coordinator.services import OVERVIEW_CACHE_KEY
    from tests.factories import UserFactory

    settings.OPERATIONS_LIVE_SECONDS = 1
    cache.delete(OVERVIEW_CACHE_KEY)
    viewer = UserFactory(role=Role.USER, is_staff=True)
    viewer.user_permissions.set(Permission.objects.filter(codename__startswith="view_"))
    staff_token, user_token = access_token_for(viewer), access_token_for(user)

    async def body() -> None:
        plain, _, _ = await ws_connect(f"/ws/progress/?token={user_token}")
        await plain.send_json_to({"type": "subscribe", "topics": ["ops:dashboard", "*"]})
        await ws_receive_until(plain, lambda m: m["type"] == "subscribed")
        staff, _, _ = await ws_connect(f"/ws/progress/?token={staff_token}")
        await staff.send_json_to({"type": "subscribe", "topics": ["ops:dashboard", "stream:0"]})
        await ws_receive_until(staff, lambda m: m["type"] == "subscribed")
        # Another system topic stays the admins': the grant is the dashboard's topic by name.
        await sync_to_async(publish)("stream:0", "new", "a socket stream")
        # Nobody publishes the overview here: the hub asks for it while a reader follows the topic.
        got = await ws_receive_until(staff, lambda m: m["type"] == "event", timeout=10)
        event = got[-1]
        assert event["topic"] == "ops:dashboard"
        assert event["state"]["overview"]["cards"]["jobs.jobs-running"] == {"value": "0", "note": "0 waiting"}
        assert await plain.receive_nothing(timeout=0.5)
        await plain.disconnect()
        await staff.disconnect()

    run(body)


def test_an_open_socket_closes_once_its_reader_is_no_longer_staff(monkeypatch) -> None:
    from coordinator.models import Role
    from tests.factories import UserFactory

    monkeypatch.setattr("progress.conf.KEEPALIVE_SECONDS", 0.05)
    staff = UserFactory(role=Role.USER, is_staff=True)
    token = access_token_for(staff)

    def demote() -> None:
        staff.is_staff = False
        staff.save()

    async def body() -> None:
        communicator, connected, _ = await ws_connect(f"/ws/progress/?token={token}")
        assert connected
        await sync_to_async(demote)()
        while (message := await communicator.receive_output(timeout=20))["type"] != "websocket.close":
            pass
        assert message["code"] == 4401

    run(body)


def test_the_live_overview_is_published_at_most_once_per_interval(admin, settings) -> None:
    from django.core.cache import cache

    from coordinator.services import OVERVIEW_CACHE_KEY, operations_overview_publish
    from progress.models import ProgressEvent

    cache.delete(OVERVIEW_CACHE_KEY)
    settings.OPERATIONS_LIVE_SECONDS = 3600
    before = ProgressEvent.objects.filter(topic="ops:dashboard").count()
    assert operations_overview_publish(throttled=True) is True
    # However many processes and readers ask within the interval, one overview went out.
    assert [operations_overview_publish(throttled=True) for _ in range(5)] == [False] * 5
    assert ProgressEvent.objects.filter(topic="ops:dashboard").count() == before + 1
    cache.delete(OVERVIEW_CACHE_KEY)  # the interval is over
    assert operations_overview_publish(throttled=True) is True
