"""The per-process hub's fan-out: each event reaches the readers that follow it."""

from __future__ import annotations

from typing import Any

from progress.hub import Hub, Subscriber


def event(topic: str, event_id: int) -> dict[str, Any]:
    return {"id": event_id, "topic": topic, "kind": "msg", "text": "", "state": {}, "owner_id": None}


def test_a_confined_reader_is_offered_its_own_topics_only_and_the_others_everything() -> None:
    hub = Hub()
    asked: list[str] = []

    def counting(topics: set[str]) -> Any:
        def accepts(e: Any) -> bool:
            asked.append(e["topic"])
            return e["topic"] in topics

        return accepts

    devices = [
        Subscriber(counting({f"poolpush:{n}", "poolpush:*"}), topics={f"poolpush:{n}", "poolpush:*"}, confined=True)
        for n in range(5000)
    ]
    watcher = Subscriber(lambda e: True)  # a live page: every event, its own filter decides
    for reader in (*devices, watcher):
        hub.add(reader)
    hub.dispatch([event("poolpush:7", 1), event("job:3", 2)])
    assert devices[7].queue.qsize() == 1 and all(d.queue.empty() for i, d in enumerate(devices) if i != 7)
    assert watcher.queue.qsize() == 2
    assert asked == ["poolpush:7"]  # 5,000 device streams, one filter asked
    hub.dispatch([event("poolpush:*", 3)])  # a broadcast reaches every device
    assert all(d.queue.qsize() == (2 if i == 7 else 1) for i, d in enumerate(devices))
    hub.unsubscribe(devices[7])
    hub.dispatch([event("poolpush:7", 4)])
    assert devices[7].queue.qsize() == 2 and "poolpush:7" not in hub.confined
