from __future__ import annotations

import json

import pytest
from asgiref.sync import sync_to_async

from tests.conftest import access_token_for
from tests.progress.conftest import SseClient, named_events, parse_sse, publish, run

pytestmark = pytest.mark.django_db(transaction=True)


def test_snapshot_then_live_events_in_the_seed_format(admin) -> None:
    publish("stream:0", "new", "backup")
    publish("stream:0", "msg", "copying 1/3")
    publish("stream:1", "new", "finished thing")
    publish("stream:1", "end", "")
    token = access_token_for(admin)

    async def body() -> None:
        sse = SseClient(f"token={token}")
        await sse.open()
        assert sse.status == 200
        assert sse.headers["content-type"] == "text/event-stream"
        assert sse.headers["cache-control"] == "no-cache"
        text = await sse.read_until("\nid: ")
        assert text.startswith("retry: ")
        # the snapshot: one `new` and the latest `msg` per live stream; ended streams are not live
        assert named_events(text) == [("new", {"0": "backup"}), ("msg", {"0": "copying 1/3"})]
        new_id = await sync_to_async(publish)("stream:0", "msg", 'a "quoted"\nline')
        await sync_to_async(publish)("stream:0", "end", "")
        text = await sse.read_until("event: end")
        frames = [f for f in parse_sse(text) if f.get("event")][2:]
        assert frames[0] == {"id": str(new_id), "event": "msg", "data": json.dumps({"0": 'a "quoted"\nline'})}
        assert (frames[1]["event"], json.loads(frames[1]["data"])) == ("end", {"0": ""})
        await sse.close()

    run(body)


def test_domain_topics_are_keyed_by_topic_and_topic_filter_narrows(admin) -> None:
    token = access_token_for(admin)

    async def body() -> None:
        sse = SseClient(f"token={token}&topic=job:7")
        await sse.open()
        await sse.read_until("\nid: ")
        await sync_to_async(publish)("job:8", "new", "other job")
        await sync_to_async(publish)("job:7", "new", "csv export")
        text = await sse.read_until("event: new")
        assert named_events(text) == [("new", {"job:7": "csv export"})]
        await sse.close()

    run(body)


def test_topic_star_follows_every_topic_live_as_it_does_in_the_snapshot(user) -> None:
    """`topic=*` read every topic in the snapshot but no live event (the filter compared `*` as a name)."""
    token = access_token_for(user)

    async def body() -> None:
        sse = SseClient(f"token={token}&topic=*")
        await sse.open()
        await sse.read_until("\nid: ")
        await sync_to_async(publish)("job:83", "new", "my export", owner_id=user.pk)
        text = await sse.read_until("event: new")
        assert named_events(text) == [("new", {"job:83": "my export"})]
        await sse.close()

    run(body)


def test_last_event_id_replays_missed_events(admin) -> None:
    publish("stream:4", "new", "task")
    seen = publish("stream:4", "msg", "one")
    publish("stream:4", "msg", "two")
    last = publish("stream:4", "end", "boom")
    token = access_token_for(admin)

    async def body() -> None:
        sse = SseClient(f"token={token}&once=1", headers={"Last-Event-ID": str(seen)})
        await sse.open()
        text = await sse.read_all()
        assert named_events(text) == [("msg", {"4": "two"}), ("end", {"4": "boom"})]
        assert parse_sse(text)[-1]["id"] == str(last)

    run(body)


@pytest.mark.parametrize("query,accept", [("once=1", "text/event-stream"), ("", "*/*")])
def test_once_or_a_client_not_asking_for_a_stream_gets_the_snapshot_and_the_end(admin, query, accept) -> None:
    publish("run:ab", "new", "a run", {"percent": 10})

    async def body() -> None:
        sse = SseClient(f"token={access_token_for(admin)}&{query}", headers={"Accept": accept})
        await sse.open()
        text = await sse.read_all()
        assert named_events(text) == [("new", {"run:ab": "a run"})]

    run(body)


@pytest.mark.parametrize(
    "query,headers", [("once=2", {}), ("", {"Last-Event-ID": "x1"}), ("lastEventId=99999999999999999999999", {})]
)
def test_bad_parameters_are_400_envelopes(admin, query, headers) -> None:
    async def body() -> None:
        sse = SseClient(f"token={access_token_for(admin)}&{query}", headers=headers)
        await sse.open()
        assert sse.status == 400
        assert json.loads(await sse.read_all())["code"] == "validation_error"

    run(body)


def test_anonymous_gets_401_unless_public(db, settings) -> None:
    async def body() -> int:
        sse = SseClient("once=1")
        await sse.open()
        await sse.read_all()
        return sse.status

    assert run(body) == 401
    settings.PROGRESS_PUBLIC = True
    publish("stream:2", "new", "public task")
    assert run(body) == 200


def test_a_token_of_a_deleted_user_is_refused_without_server_internals(user) -> None:
    token = access_token_for(user)
    user.delete()

    async def body() -> tuple[int, str]:
        sse = SseClient(f"once=1&token={token}")
        await sse.open()
        return sse.status, await sse.read_all()

    status, text = run(body)
    answer = json.loads(text)
    assert status == 403 and set(answer) == {"code", "message", "extra"}
    assert answer["message"] == "This account may not read progress."
    assert "{" not in answer["message"] and "ErrorDetail" not in text


def test_users_see_their_own_progress_only(user, admin) -> None:
    publish("job:1", "new", "my export", owner_id=user.pk)
    publish("job:2", "new", "admin export", owner_id=admin.pk)
    publish("stream:0", "new", "socket task")

    def names(who) -> list:
        async def body() -> list:
            sse = SseClient(f"token={access_token_for(who)}&once=1")
            await sse.open()
            return named_events(await sse.read_all())

        return run(body)

    assert names(user) == [("new", {"job:1": "my export"})]
    assert names(admin) == [
        ("new", {"job:1": "my export"}),
        ("new", {"job:2": "admin export"}),
        ("new", {"0": "socket task"}),
    ]


def test_keepalive_comments_when_idle(admin, monkeypatch) -> None:
    monkeypatch.setattr("progress.conf.KEEPALIVE_SECONDS", 0.5)

    async def body() -> None:
        sse = SseClient(f"token={access_token_for(admin)}")
        await sse.open()
        await sse.read_until(": keep-alive\n\n")
        await sse.close()

    run(body)


def test_cors_headers_on_stream_and_preflight(admin, settings, client) -> None:
    settings.CORS_ALLOWED_ORIGINS = ["http://front.example"]
    publish("stream:0", "new", "x")

    async def body() -> dict:
        sse = SseClient(f"token={access_token_for(admin)}", headers={"Origin": "http://front.example"})
        await sse.open()
        await sse.read_until("event: new")
        await sse.close()
        return sse.headers

    assert run(body)["access-control-allow-origin"] == "http://front.example"
    preflight = client.options(
        "/progress/events",
        HTTP_ORIGIN="http://front.example",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="GET",
    )
    assert preflight.status_code == 200
    assert preflight["Access-Control-Allow-Origin"] == "http://front.example"
    other = client.get("/progress/events?once=1", HTTP_ORIGIN="http://evil.example")
    assert "Access-Control-Allow-Origin" not in other


def test_post_is_405(client) -> None:
    response = client.post("/progress/events")
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"


def test_wsgi_request_returns_the_beginning_without_hanging(client, admin) -> None:
    publish("stream:5", "new", "served by gunicorn")
    client.force_login(admin)
    response = client.get("/progress/events")
    assert response.status_code == 200
    assert named_events(response.content.decode()) == [("new", {"5": "served by gunicorn"})]


@pytest.mark.parametrize("change", ["deactivated", "password changed"])
def test_an_open_stream_ends_once_its_reader_may_no_longer_read(user, monkeypatch, change) -> None:
    import asyncio

    monkeypatch.setattr("progress.conf.KEEPALIVE_SECONDS", 0.05)
    token = access_token_for(user)

    def revoke() -> None:
        if change == "deactivated":
            user.is_active = False
        else:
            user.set_password("a-new-long-password-2")
        user.save()

    async def body() -> str:
        sse = SseClient(f"token={token}")
        await sse.open()
        await sse.read_until(": keep-alive\n\n")
        await sync_to_async(revoke)()
        return await asyncio.wait_for(sse.read_all(), timeout=20)  # a bound for a stream that never ends

    assert run(body).endswith(": keep-alive\n\n")  # it ended by itself after its last keep-alive


def test_an_expired_token_no_longer_allows_reading(user) -> None:
    import time

    from coordinator.tokens import credential_stamp
    from progress.auth import Access, _allowed_now
    from progress.selectors import Viewer

    granted = Access(Viewer(sees_all=False, user_id=user.pk), user_id=user.pk, stamp=credential_stamp(user))
    assert _allowed_now(granted)
    assert not _allowed_now(Access(granted.viewer, user_id=user.pk, stamp=granted.stamp, expires_at=time.time() - 1))


def test_one_user_holds_at_most_so_many_open_streams(user, settings) -> None:
    settings.PROGRESS_STREAMS_PER_USER = 2
    token = access_token_for(user)

    async def body() -> list[int]:
        opened = [SseClient(f"token={token}") for _ in range(3)]
        statuses = []
        for sse in opened[:2]:
            await sse.open()
            await sse.read_until("id: ")
            statuses.append(sse.status)
        await opened[2].open()
        statuses.append(opened[2].status)
        refused = json.loads(await opened[2].read_all())
        assert refused["code"] == "too_many_streams"
        await opened[0].close()
        again = SseClient(f"token={token}")
        await again.open()
        await again.read_until("id: ")
        statuses.append(again.status)
        for sse in (opened[1], again):
            await sse.close()
        return statuses

    assert run(body) == [200, 200, 429, 200]
