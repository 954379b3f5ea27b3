"""Fast seeding for the pool benchmark: COPY rows straight into the pool tables (PostgreSQL)."""

from __future__ import annotations

import json
import random
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

ISO = "%Y-%m-%d %H:%M:%S.%f+00"
MSG_COLUMNS = (
    "seq",
    "msg_id",
    "ts",
    "sender",
    "to",
    "type",
    "title",
    "body",
    "parent_id",
    "meta",
    "target_all",
    "expires_at",
    "cancelled_at",
    "sent_by_id",
    "device_id",
    "journal_pending",
    "state",
    "abort_reason",
)
DELIVERY_COLUMNS = ("task_id", "device_id", "state", "progress", "created_at", "updated_at", "attempts")


def mid() -> str:
    return "msg_" + uuid.uuid4().hex


class Seeder:
    """Writes messages and deliveries with COPY; keeps the message sequence and counts."""

    def __init__(self, connection: Any, *, devices: int, sender_id: int, sender_email: str, rng: random.Random):
        self.conn = connection
        self.devices = devices
        self.sender = f"user:{sender_email}"
        self.sender_id = sender_id
        self.rng = rng
        with self.conn.cursor() as cur:
            cur.execute("SELECT COALESCE(MAX(seq), 0) FROM pool_message")
            self.seq = int(cur.fetchone()[0])
        self.messages = 0
        self._msg_rows: list[tuple[Any, ...]] = []
        self._del_rows: list[tuple[Any, ...]] = []

    # rows ------------------------------------------------------------------------------------
    def message(
        self,
        ts: datetime,
        sender: str,
        to: str,
        type_: str,
        *,
        title: str = "",
        body: str = "",
        parent: str | None = None,
        meta: dict[str, Any] | None = None,
        target_all: bool = False,
        expires_at: datetime | None = None,
        device_id: int | None = None,
    ) -> tuple[int, str]:
        self.seq += 1
        msg_id = mid()
        self._msg_rows.append(
            (
                self.seq,
                msg_id,
                ts,
                sender,
                to,
                type_,
                title,
                body,
                parent,
                json.dumps(meta or {}),
                target_all,
                expires_at,
                None,
                self.sender_id if sender == self.sender else None,
                device_id,
                False,  # history: not waiting for the day log
                "",  # no task state: history the task API does not page through
                "",
            )
        )
        self.messages += 1
        return self.seq, msg_id

    def delivery(self, task_seq: int, device_id: int, state: str, ts: datetime) -> None:
        self._del_rows.append((task_seq, device_id, state, None, ts, ts, 1))

    def flush(self) -> None:
        with self.conn.cursor() as cur:
            if self._msg_rows:
                with cur.copy(
                    f"COPY pool_message ({', '.join(chr(34) + c + chr(34) for c in MSG_COLUMNS)}) FROM STDIN"
                ) as copy:
                    for row in self._msg_rows:
                        copy.write_row(row)
            if self._del_rows:
                with cur.copy(f"COPY pool_delivery ({', '.join(DELIVERY_COLUMNS)}) FROM STDIN") as copy:
                    for row in self._del_rows:
                        copy.write_row(row)
        self._msg_rows.clear()
        self._del_rows.clear()

    def finish(self) -> None:
        self.flush()
        with self.conn.cursor() as cur:
            cur.execute("SELECT setval(pg_get_serial_sequence('pool_message', 'seq'), %s)", [self.seq])
            cur.execute("ANALYZE pool_message")
            cur.execute("ANALYZE pool_delivery")

    def device(self) -> int:
        return self.rng.randint(1, self.devices)

    # shapes ----------------------------------------------------------------------------------
    def pending_core(self, now: datetime, broadcasts: int, direct: int, lists: int) -> None:
        """What is pending: live broadcasts (fetched by every device), direct and list tasks."""
        for i in range(broadcasts):
            ts = now - timedelta(hours=2, minutes=i)
            seq, _ = self.message(ts, self.sender, "device:*", "task", title=f"broadcast {i}", target_all=True)
            for device in range(1, self.devices + 1):
                self.delivery(seq, device, "pending", ts)
        for i in range(direct):
            device = self.device()
            ts = now - timedelta(minutes=self.rng.randint(1, 600))
            seq, _ = self.message(ts, self.sender, f"device:{device}", "task", title=f"direct {i}")
            self.delivery(seq, device, "pending", ts)
        for i in range(lists):
            targets = sorted({self.device() for _ in range(self.rng.randint(5, 20))})
            ts = now - timedelta(minutes=self.rng.randint(1, 600))
            seq, _ = self.message(
                ts, self.sender, "device:" + json.dumps(targets, separators=(",", ":")), "task", title=f"list {i}"
            )
            for device in targets:
                self.delivery(seq, device, "pending", ts)
        self.flush()

    def history(self, now: datetime, until_messages: int, progress: Any = None) -> None:
        """Answered work of the past 30 days: direct, list and expired broadcast tasks, heartbeats."""
        started = time.monotonic()
        last_report = 0
        while self.messages < until_messages:
            ts = now - timedelta(days=1 + self.rng.random() * 29)
            pick = self.rng.random()
            if pick < 0.55:  # direct task answered (maybe with progress first)
                device = self.device()
                seq, msg_id = self.message(ts, self.sender, f"device:{device}", "task", title="job")
                final = "done" if self.rng.random() < 0.9 else "failed"
                if self.rng.random() < 0.3:
                    self.message(
                        ts + timedelta(seconds=5),
                        f"device:{device}",
                        self.sender,
                        "response",
                        parent=msg_id,
                        meta={"status": "progress", "progress": 50},
                        device_id=device,
                    )
                self.message(
                    ts + timedelta(seconds=9),
                    f"device:{device}",
                    self.sender,
                    "response",
                    parent=msg_id,
                    meta={"status": final},
                    device_id=device,
                )
                self.delivery(seq, device, final, ts)
            elif pick < 0.75:  # list task, every target answers
                targets = sorted({self.device() for _ in range(self.rng.randint(3, 12))})
                seq, msg_id = self.message(
                    ts, self.sender, "device:" + json.dumps(targets, separators=(",", ":")), "task", title="batch"
                )
                for device in targets:
                    self.message(
                        ts + timedelta(seconds=7),
                        f"device:{device}",
                        self.sender,
                        "response",
                        parent=msg_id,
                        meta={"status": "done"},
                        device_id=device,
                    )
                    self.delivery(seq, device, "done", ts)
            elif pick < 0.7501:  # expired broadcast, answered by a share of the fleet
                seq, msg_id = self.message(
                    ts,
                    self.sender,
                    "device:*",
                    "task",
                    title="fleet",
                    target_all=True,
                    expires_at=ts + timedelta(hours=6),
                )
                for device in self.rng.sample(range(1, self.devices + 1), min(self.devices, 1500)):
                    self.message(
                        ts + timedelta(seconds=30),
                        f"device:{device}",
                        self.sender,
                        "response",
                        parent=msg_id,
                        meta={"status": "done"},
                        device_id=device,
                    )
                    self.delivery(seq, device, "done", ts)
            else:  # heartbeats
                for _ in range(5):
                    device = self.device()
                    self.message(ts, f"device:{device}", "backend", "heartbeat", device_id=device)
            if len(self._msg_rows) >= 20000:
                self.flush()
            if progress and self.messages - last_report >= 50000:
                last_report = self.messages
                rate = self.messages / max(time.monotonic() - started, 1e-9)
                progress(f"  seeded {self.messages:,} messages ({rate:,.0f}/s)")
        self.flush()


def stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def now_utc() -> datetime:
    return datetime.now(UTC)
