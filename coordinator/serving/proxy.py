"""The embedded front door: one address that splits traffic between the WSGI and ASGI servers.

`manage.py serve` runs granian (fast, multi-process, plain HTTP over WSGI) and daphne (WebSocket
and Server-Sent Events) side by side on UNIX sockets, and this proxy on the public address. It
reads the request line of each new connection and splices the connection, unchanged, to daphne
when the path starts with one of `settings.ASGI_PATH_PREFIXES` and to granian otherwise.

Routing per connection is exact only because granian runs here with HTTP/1.1 keep-alive off
(`--no-http1-keep-alive`): it closes every connection after one response, so a client's next
request comes on a new connection, routed afresh. With keep-alive on, a browser could send a
`/ws/` request down a connection first routed to granian. WebSocket and SSE connections are
long-lived by nature and stay on daphne. In production a real reverse proxy (nginx, see
docs/serving.md) does this job instead, per request.

granian refuses connections until one of its workers has loaded the application (seconds, while
Django starts; gunicorn queued them instead), so a connection that finds its server not
accepting yet waits for it here, up to UPSTREAM_WAIT seconds, before being answered 502.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
from collections.abc import Sequence

logger = logging.getLogger("coordinator.proxy")

MAX_REQUEST_LINE = 16 * 1024
CHUNK = 64 * 1024
UPSTREAM_WAIT = 15.0  # seconds a connection waits for a server that is starting (not accepting yet)
UPSTREAM_RETRY = 0.05


def _bad_gateway(message: str) -> bytes:
    body = json.dumps({"code": "bad_gateway", "message": message, "extra": {}}).encode()
    head = (
        "HTTP/1.1 502 Bad Gateway\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class Router:
    def __init__(self, wsgi_socket: str, asgi_socket: str, asgi_prefixes: Sequence[str]) -> None:
        self.wsgi_socket = wsgi_socket
        self.asgi_socket = asgi_socket
        self.asgi_prefixes = tuple(prefix.encode() for prefix in asgi_prefixes)
        self.stopping = asyncio.Event()

    def upstream_for(self, request_line: bytes) -> str:
        parts = request_line.split(b" ", 2)
        target = parts[1] if len(parts) >= 2 else b"/"
        if target.startswith(b"http://") or target.startswith(b"https://"):  # absolute-form
            target = b"/" + target.split(b"/", 3)[-1] if target.count(b"/") >= 3 else b"/"
        return self.asgi_socket if target.startswith(self.asgi_prefixes) else self.wsgi_socket

    async def handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        upstream_writer: asyncio.StreamWriter | None = None
        try:
            try:
                request_line = await asyncio.wait_for(client_reader.readuntil(b"\n"), timeout=60)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
                return
            upstream = await self._connect(self.upstream_for(request_line))
            if upstream is None:
                with contextlib.suppress(ConnectionError):  # the client may have given up meanwhile
                    client_writer.write(_bad_gateway("The application server is not ready yet; retry in a moment."))
                    await client_writer.drain()
                return
            upstream_reader, upstream_writer = upstream
            upstream_writer.write(request_line)
            to_upstream = asyncio.ensure_future(self._pipe(client_reader, upstream_writer, half_close=True))
            to_client = asyncio.ensure_future(self._pipe(upstream_reader, client_writer, half_close=False))
            # The response side decides: once the server has finished (closed), the exchange is over.
            await to_client
            to_upstream.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await to_upstream
        finally:
            for writer in (upstream_writer, client_writer):
                if writer is not None:
                    with contextlib.suppress(Exception):
                        writer.close()

    async def _connect(self, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """A connection to the server on `path`, waiting while it does not accept yet (None: gave up)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + UPSTREAM_WAIT
        while True:
            try:
                return await asyncio.open_unix_connection(path, limit=CHUNK)
            except (ConnectionRefusedError, FileNotFoundError):  # starting: not listening, or no socket yet
                if loop.time() >= deadline or self.stopping.is_set():
                    return None
                await asyncio.sleep(UPSTREAM_RETRY)
            except OSError:
                return None

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, half_close: bool) -> None:
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
            if half_close and writer.can_write_eof() and not writer.is_closing():
                writer.write_eof()
        except (ConnectionError, OSError, RuntimeError):
            # The other side went away (RuntimeError: the transport closed under write_eof).
            return


async def serve(host: str, port: int, router: Router) -> None:
    server = await asyncio.start_server(router.handle, host, port, limit=MAX_REQUEST_LINE, backlog=1024)
    stop = router.stopping  # also ends the waits for a server that is not accepting yet
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    addresses = ", ".join(str(sock.getsockname()) for sock in server.sockets)
    print(f"front door listening on {addresses}", flush=True)
    async with server:
        await stop.wait()
    print("front door stopped", flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--wsgi-socket", required=True)
    parser.add_argument("--asgi-socket", required=True)
    parser.add_argument("--asgi-prefix", action="append", default=[])
    args = parser.parse_args(argv)
    router = Router(args.wsgi_socket, args.asgi_socket, args.asgi_prefix or ["/ws/", "/progress/events"])
    try:
        import uvloop

        uvloop.run(serve(args.host, args.port, router))
    except ImportError:  # pragma: no cover - uvloop is a pinned dependency
        asyncio.run(serve(args.host, args.port, router))


if __name__ == "__main__":
    main()
