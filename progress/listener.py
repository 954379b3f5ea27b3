"""The seed's task side: UNIX sockets where scripts report progress (`manage.py progress_listen`).

- `PROGRESS_SOCKET` (`SOCK_SEQPACKET`): the first packet of a connection is the stream's name,
  every later packet a message; disconnecting ends the stream with `""` (a receive error ends it
  with the error text). One trailing newline or NUL is stripped; names are truncated to 100
  characters, messages to 1,000. `socat - UNIX-CONNECT:<path>,type=5` works line by line.
- `PROGRESS_STREAM_SOCKET` (`SOCK_STREAM`): the same with one message per line.

Each connection gets the lowest-numbered free uid after the last one handed out (round-robin over
0..PROGRESS_MAX_STREAMS-1, skipping uids in use, as the seed did); its topic is `stream:<uid>`.
Messages starting with a percentage (`42% copying`, `[42%] copying`) also set `state.percent`.
Events are stored in batches by one flusher, so a burst from many clients costs few transactions;
each connection is its own task, so a silent or misbehaving client never blocks the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import stat
from pathlib import Path
from typing import Any

from asgiref.sync import sync_to_async
from django.db import close_old_connections, connection

from progress import conf
from progress.events import Event
from progress.services import events_broadcast, events_store, streams_end_orphans

logger = logging.getLogger(__name__)

RECV_SIZE = 8192  # bytes per packet read; the kernel discards the rest of a longer SEQPACKET packet
MAX_LINE = 64 * 1024  # SOCK_STREAM: longer lines are cut here and the rest skipped up to the newline
BATCH = 2000
HIGH_WATER = 50000  # pending events above which connections stop reading until the flusher catches up
_PERCENT = re.compile(r"^\s*\[?\s*(\d{1,3}(?:\.\d+)?)\s*%\]?")


def clean(data: bytes, limit: int) -> str:
    """Strip one trailing newline or NUL, decode leniently, drop NULs, truncate to `limit` characters."""
    if data[-1:] in (b"\n", b"\0"):
        data = data[:-1]
    return data.decode("utf-8", errors="replace").replace("\x00", "\ufffd")[:limit]


def message_state(text: str) -> dict[str, Any]:
    match = _PERCENT.match(text)
    if match and float(match.group(1)) <= 100:
        value = float(match.group(1))
        return {"percent": int(value) if value.is_integer() else value}
    return {}


def _close_db() -> None:
    connection.close()


def _end_orphans() -> list[Event]:
    close_old_connections()
    return streams_end_orphans("listener restarted")


class UidPool:
    """Small integer uids, handed out round-robin and reused once released (the seed's scheme)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.in_use: set[int] = set()
        self.next = 0

    def take(self) -> int | None:
        for offset in range(self.size):
            uid = (self.next + offset) % self.size
            if uid not in self.in_use:
                self.in_use.add(uid)
                self.next = (uid + 1) % self.size
                return uid
        return None

    def release(self, uid: int) -> None:
        self.in_use.discard(uid)


class Listener:
    def __init__(self, seqpacket_path: Path | None = None, stream_path: Path | None = None) -> None:
        self.seqpacket_path = seqpacket_path or conf.socket_path()
        self.stream_path = stream_path or conf.stream_socket_path()
        self.uids = UidPool(conf.max_streams())
        self.pending: list[dict[str, Any]] = []
        self.has_pending = asyncio.Event()
        self.drained = asyncio.Event()
        self.connections: set[asyncio.Task[None]] = set()
        self.stopping = asyncio.Event()
        self.ready = asyncio.Event()
        self.layer = conf.transport() == "layer"

    # --- events -------------------------------------------------------------------------------
    async def publish(self, uid: int, kind: str, text: str, state: dict[str, Any] | None = None) -> None:
        self.pending.append(
            {"topic": f"stream:{uid}", "kind": kind, "text": text, "state": state or {}, "owner_id": None}
        )
        self.has_pending.set()
        self.drained.clear()
        while len(self.pending) > HIGH_WATER and not self.stopping.is_set():
            await self.drained.wait()

    async def flusher(self) -> None:
        while True:
            await self.has_pending.wait()
            await asyncio.sleep(0.005)  # let a burst gather into one transaction (and one layer message)
            batch, self.pending = self.pending[:BATCH], self.pending[BATCH:]
            if not self.pending:
                self.has_pending.clear()
            try:
                await self.store(batch)
            except Exception:
                logger.exception("Storing %d progress events failed; retrying", len(batch))
                self.pending[:0] = batch
                self.has_pending.set()
                await asyncio.sleep(1.0)
                continue
            if len(self.pending) <= HIGH_WATER:
                self.drained.set()

    async def store(self, batch: list[dict[str, Any]]) -> None:
        """Store the batch (retried by the flusher until it is stored: once), then broadcast it. A
        failed broadcast is not retried with the write: the events are stored, and every hub reads
        what its layer missed from the table (progress/hub.py)."""

        def write() -> Any:
            close_old_connections()
            return events_store(batch)

        await self.broadcast(await sync_to_async(write)())

    async def broadcast(self, events: list[Event]) -> None:
        if not self.layer or not events:
            return
        try:
            await events_broadcast(events)
        except Exception as exc:  # Redis down: the events are stored; the hubs read them from the table
            logger.warning("Broadcasting %d stored progress events failed: %s", len(events), exc)

    # --- sockets ------------------------------------------------------------------------------
    def _bind(self, path: Path, kind: int) -> socket.socket:
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(path.lstat().st_mode):
                path.unlink()  # a leftover from a listener that died
        sock = socket.socket(socket.AF_UNIX, kind)
        old_umask = os.umask(0o177)  # never visible with wider permissions, not even briefly
        try:
            sock.bind(str(path))
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        sock.listen(512)
        sock.setblocking(False)
        return sock

    async def serve(self) -> None:
        """Listen on both sockets until `stop()`; connections are ended and events flushed on the way out."""
        loop = asyncio.get_running_loop()
        await self.broadcast(await sync_to_async(_end_orphans)())
        seq = self._bind(self.seqpacket_path, socket.SOCK_SEQPACKET)
        stream = self._bind(self.stream_path, socket.SOCK_STREAM)
        flusher = loop.create_task(self.flusher())
        acceptors = [
            loop.create_task(self._accept(seq, self._seqpacket)),
            loop.create_task(self._accept(stream, self._stream)),
        ]
        logger.info("Progress sockets: %s (SEQPACKET), %s (STREAM)", self.seqpacket_path, self.stream_path)
        self.ready.set()
        try:
            await self.stopping.wait()
        finally:
            for task in acceptors:
                task.cancel()
            for task in list(self.connections):
                task.cancel()
            await asyncio.gather(*acceptors, *self.connections, return_exceptions=True)
            for sock, path in ((seq, self.seqpacket_path), (stream, self.stream_path)):
                sock.close()
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            while self.pending:
                batch, self.pending = self.pending[:BATCH], self.pending[BATCH:]
                with contextlib.suppress(Exception):
                    await self.store(batch)
            flusher.cancel()
            await sync_to_async(_close_db)()  # the thread that wrote holds the connection

    def stop(self) -> None:
        self.stopping.set()

    async def _accept(self, sock: socket.socket, handler: Any) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(sock)
            except OSError as exc:  # e.g. EMFILE under a connection flood: back off, keep serving
                logger.warning("accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            conn.setblocking(False)
            task = loop.create_task(self._connection(conn, handler))
            self.connections.add(task)
            task.add_done_callback(self.connections.discard)

    async def _connection(self, conn: socket.socket, handler: Any) -> None:
        uid = self.uids.take()
        if uid is None:
            logger.warning("All %d stream uids are in use; refusing a connection", self.uids.size)
            conn.close()
            return
        started = False
        error = ""
        try:
            async for text in handler(conn):
                if not started:
                    started = True
                    await self.publish(uid, "new", text[: conf.MAX_NAME])
                else:
                    await self.publish(uid, "msg", text, message_state(text))
        except asyncio.CancelledError:
            error = "listener stopped"
        except OSError as exc:
            error = str(exc) or exc.__class__.__name__
        finally:
            conn.close()
            if started:
                self.pending.append(
                    {"topic": f"stream:{uid}", "kind": "end", "text": error, "state": {}, "owner_id": None}
                )
                self.has_pending.set()
            self.uids.release(uid)

    async def _seqpacket(self, conn: socket.socket) -> Any:
        loop = asyncio.get_running_loop()
        first = True
        while True:
            data = await loop.sock_recv(conn, RECV_SIZE)
            if not data:
                return
            yield clean(data, conf.MAX_NAME if first else conf.MAX_MESSAGE)
            first = False

    async def _stream(self, conn: socket.socket) -> Any:
        loop = asyncio.get_running_loop()
        buffer = b""
        skipping = False
        first = True
        while True:
            data = await loop.sock_recv(conn, 65536)
            if not data:
                if buffer and not skipping:
                    yield clean(buffer, conf.MAX_NAME if first else conf.MAX_MESSAGE)
                return
            buffer += data
            while True:
                line, newline, rest = buffer.partition(b"\n")
                if not newline:
                    if len(buffer) > MAX_LINE:  # an endless line: keep its start, skip to the newline
                        if not skipping:
                            yield clean(buffer[:MAX_LINE], conf.MAX_NAME if first else conf.MAX_MESSAGE)
                            first = False
                        skipping, buffer = True, b""
                    break
                buffer = rest
                if skipping:
                    skipping = False
                    continue
                yield clean(line.removesuffix(b"\r"), conf.MAX_NAME if first else conf.MAX_MESSAGE)
                first = False
