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
import socket
from collections.abc import Sequence

from coordinator.api.envelope import error_body

logger = logging.getLogger("coordinator.proxy")

MAX_REQUEST_LINE = 16 * 1024
CHUNK = 64 * 1024
UPSTREAM_WAIT = 15.0  # seconds a connection waits for a server that is starting (not accepting yet)
UPSTREAM_RETRY = 0.05
# After the server's answer, what the client still sends is read and dropped for up to this long
# (a lingering close, as nginx and Apache do): closing a socket with unread data makes the kernel
# reset the connection, and a reset can destroy the answer before the client has read it.
LINGER_SECONDS = 2.0


def _bad_gateway(message: str) -> bytes:
    body = json.dumps(error_body("bad_gateway", message)).encode()
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
        upstream: socket.socket | None = None
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
            # The server side is a plain socket, not a stream transport: a transport that fails to
            # write (the server closed without reading the whole body, as for a 401 before a large
            # upload) closes itself for reading too, and the answer waiting in the socket was lost.
            to_upstream = asyncio.ensure_future(self._to_upstream(request_line, client_reader, upstream))
            to_client = asyncio.ensure_future(self._to_client(upstream, client_writer))
            # The response side decides: once the server has finished (closed), the exchange is over.
            await to_client
            to_upstream.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await to_upstream
            # The client may still be sending the body the server did not read: end our side, and
            # drain the rest, so that closing does not reset the connection under the answer.
            await self._linger(client_reader, client_writer)
        finally:
            if upstream is not None:
                upstream.close()
            with contextlib.suppress(Exception):
                client_writer.close()

    async def _connect(self, path: str) -> socket.socket | None:
        """A connection to the server on `path`, waiting while it does not accept yet (None: gave up)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + UPSTREAM_WAIT
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, path)
                return sock
            except (ConnectionRefusedError, FileNotFoundError):  # starting: not listening, or no socket yet
                sock.close()
                if loop.time() >= deadline or self.stopping.is_set():
                    return None
                await asyncio.sleep(UPSTREAM_RETRY)
            except OSError:
                sock.close()
                return None

    @staticmethod
    async def _to_upstream(request_line: bytes, reader: asyncio.StreamReader, upstream: socket.socket) -> None:
        """The request, as the client sends it, then EOF once the client has sent everything."""
        loop = asyncio.get_running_loop()
        try:
            await loop.sock_sendall(upstream, request_line)
            while data := await reader.read(CHUNK):
                await loop.sock_sendall(upstream, data)
            upstream.shutdown(socket.SHUT_WR)
        except (ConnectionError, OSError):
            return  # the server stopped reading; its answer, if any, still comes

    @staticmethod
    async def _to_client(upstream: socket.socket, writer: asyncio.StreamWriter) -> None:
        """The server's answer, until the server closes."""
        loop = asyncio.get_running_loop()
        try:
            while data := await loop.sock_recv(upstream, CHUNK):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError, RuntimeError):
            return  # one side went away

    @staticmethod
    async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Send EOF to the client, then read and drop what it still sends, until it closes too or
        LINGER_SECONDS pass, so that closing does not reset a connection with unread data."""
        try:
            if writer.is_closing() or not writer.can_write_eof():
                return
            await writer.drain()
            writer.write_eof()
            async with asyncio.timeout(LINGER_SECONDS):
                while await reader.read(CHUNK):
                    pass
        except (TimeoutError, ConnectionError, OSError, RuntimeError):
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
