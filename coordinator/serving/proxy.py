"""The embedded front door: one address that splits traffic between the WSGI and ASGI servers.

`manage.py serve` runs granian (fast, multi-process, plain HTTP over WSGI) and daphne (WebSocket
and Server-Sent Events) side by side on UNIX sockets, and this proxy on the public address. It
reads the request head of each new connection and splices the connection to daphne when the path
starts with one of `settings.ASGI_PATH_PREFIXES` and to granian otherwise. The head is passed on
with one change: `X-Forwarded-For`/`-Port`/`-Proto` name the real client (a server on a UNIX
socket sees no peer address; daphne runs with `--proxy-headers` and logs it), and any such header
the client sent is dropped, so that whatever runs behind may trust them.

Routing per connection is exact only because granian runs here with HTTP/1.1 keep-alive off
(`--no-http1-keep-alive`): it closes every connection after one response, so a client's next
request comes on a new connection, routed afresh. With keep-alive on, a browser could send a
`/ws/` request down a connection first routed to granian. WebSocket and SSE connections are
long-lived by nature and stay on daphne. In production a real reverse proxy (nginx, see
docs/serving.md) does this job instead, per request.

A plain request's body is read here in full before granian sees the request (as nginx buffers
bodies): a client that sends its headers and then stalls, or trickles its body, holds a coroutine
of this process and never one of granian's workers. Bodies must fit `--max-body` (else 413; a chunked
body is de-chunked here and passed on with its length); a client silent for BODY_IDLE_SECONDS while sending
gets 408. A body larger than ASK_FIRST_ABOVE (or chunked) is not read before the application has
admitted the request (`coordinator.admission`: authentication, permissions, throttles on the head
alone); a refused client gets its 401/403/429 while its body is still unsent. At most MAX_CONNECTIONS connections are open at once, MAX_PER_CLIENT from one address;
a connection past either gets 503 at once.

granian refuses connections until one of its workers has loaded the application (seconds, while
Django starts; gunicorn queued them instead), so a connection that finds its server not
accepting yet waits for it here, up to UPSTREAM_WAIT seconds, before being answered 502.

On SIGTERM the front door drains: it stops accepting, ends the long-lived streams at once (their
clients reconnect), lets the plain requests in flight finish for up to DRAIN_SECONDS, then exits.
`serve` stops the servers behind it only after it has stopped (docs/serving.md, "Stopping").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import socket
import tempfile
from collections import Counter
from collections.abc import Sequence
from typing import IO, Any

from coordinator.api.envelope import error_body
from coordinator.serving.supervision import STOP_GRACE_SECONDS

logger = logging.getLogger("coordinator.proxy")

MAX_HEAD = 64 * 1024  # request line and headers
HEAD_SECONDS = 20.0  # for the whole request head: an idle connection is closed after this
BODY_IDLE_SECONDS = 20.0  # the longest silence while a client sends its body
DEFAULT_MAX_BODY = 10 * 1024 * 1024
# Room for multipart framing (boundaries, part headers) around an upload of the largest size.
MULTIPART_FRAMING = 64 * 1024
MAX_CONNECTIONS = 4096  # below the process's file descriptor limit, with room for the upstream side
MAX_PER_CLIENT = 256
SPOOL_IN_MEMORY = 1024 * 1024
CHUNK = 64 * 1024
UPSTREAM_WAIT = 15.0  # seconds a connection waits for a server that is starting (not accepting yet)
UPSTREAM_RETRY = 0.05
# After the server's answer, what the client still sends is read and dropped for up to this long
# (a lingering close, as nginx and Apache do): closing a socket with unread data makes the kernel
# reset the connection, and a reset can destroy the answer before the client has read it.
LINGER_SECONDS = 2.0
DRAIN_SECONDS = STOP_GRACE_SECONDS  # on stop, for the plain requests in flight (granian's grace is the same)
# The admission question (coordinator/admission.py answers it): before reading a body larger than
# ASK_FIRST_ABOVE, or a chunked one, the door sends the head alone with this method, the real one in
# ADMISSION_HEADER; only an answer carrying `ADMISSION_HEADER: granted` lets the body be read.
ADMISSION_METHOD = "ADMIT"
ADMISSION_HEADER = "X-Coordinator-Admission"
ASK_FIRST_ABOVE = 64 * 1024  # smaller bodies are read at once: the kernel buffers as much anyway
# A grant may carry the largest body this request may send (the door's --max-body is the largest
# of any request): an anonymous sign-in is not buffered up to the upload limit only to be refused.
ADMISSION_LIMIT_HEADER = "X-Coordinator-Body-Limit"
ADMISSION_SECONDS = 30.0
MAX_ADMISSION_ANSWER = 1024 * 1024
# Headers a client may not send on: ours name the real client, or carry the door's question.
FORWARDED = (b"x-forwarded-for", b"x-forwarded-port", b"x-forwarded-proto", ADMISSION_HEADER.lower().encode())


def _answer(status: str, code: str, message: str) -> bytes:
    body = json.dumps(error_body(code, message)).encode()
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class BadFraming(Exception):
    def __init__(self, status: str, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def body_framing(head: bytes) -> tuple[int | None, bool]:
    """The declared body length of a request head (None: chunked), and whether it asks for
    `100 Continue`."""
    length: int | None = None
    chunked = False
    expect_continue = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip()
        if name == b"transfer-encoding":
            if value.lower() != b"chunked":
                raise BadFraming("501 Not Implemented", "transfer_encoding", "Only chunked transfer is understood.")
            chunked = True
        if name == b"content-length":
            if not value.isdigit() or len(value) > 15 or (length is not None and int(value) != length):
                raise BadFraming("400 Bad Request", "bad_content_length", "The Content-Length is not valid.")
            length = int(value)
        if name == b"expect" and value.lower() == b"100-continue":
            expect_continue = True
    if chunked and length is not None:
        raise BadFraming("400 Bad Request", "bad_content_length", "Both Content-Length and chunked transfer.")
    return (None if chunked else length or 0), expect_continue


def with_length(head: bytes, length: int) -> bytes:
    """The head as the server gets it: `Expect` answered here, the body (de-chunked) of `length` bytes."""
    dropped = (b"expect", b"transfer-encoding", b"content-length")
    lines = [line for line in head.split(b"\r\n") if line.split(b":", 1)[0].strip().lower() not in dropped]
    lines = [line for line in lines if line]
    return b"\r\n".join([*lines, f"Content-Length: {length}".encode(), b"", b""])


def _header_name(line: bytes) -> bytes:
    # granian (as CGI does) reads `X_Forwarded_For` as `X-Forwarded-For`: both spellings are one name.
    return line.split(b":", 1)[0].strip().lower().replace(b"_", b"-")


def forwarded_head(head: bytes, peer: object) -> bytes:
    """The request head with the client's X-Forwarded-* headers replaced by ours, naming `peer`."""
    request_line, _, rest = head.partition(b"\r\n")
    kept = [line for line in rest.split(b"\r\n") if line and _header_name(line) not in FORWARDED]
    if isinstance(peer, tuple) and len(peer) >= 2:  # TCP (IPv4 or IPv6)
        kept += [f"X-Forwarded-For: {peer[0]}".encode(), f"X-Forwarded-Port: {peer[1]}".encode()]
    kept.append(b"X-Forwarded-Proto: http")
    return b"\r\n".join([request_line, *kept, b"", b""])


def _limit_in(answer_head: bytes) -> int:
    """The body limit a grant names (its head in lower case), or no limit beyond the door's own."""
    for line in answer_head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip() == ADMISSION_LIMIT_HEADER.lower().encode() and value.strip().isdigit():
            return int(value.strip())
    return 1 << 62


class Router:
    def __init__(
        self, wsgi_socket: str, asgi_socket: str, asgi_prefixes: Sequence[str], max_body: int = DEFAULT_MAX_BODY
    ) -> None:
        self.max_body = max_body
        self.per_client: Counter[str] = Counter()
        self.wsgi_socket = wsgi_socket
        self.asgi_socket = asgi_socket
        self.asgi_prefixes = tuple(prefix.encode() for prefix in asgi_prefixes)
        self.stopping = asyncio.Event()
        # Each connection's task, and whether it was routed to daphne (a stream, ended at once on stop).
        self.connections: dict[asyncio.Task[None], bool] = {}

    def upstream_for(self, request_line: bytes) -> str:
        parts = request_line.split(b" ", 2)
        target = parts[1] if len(parts) >= 2 else b"/"
        if target.startswith(b"http://") or target.startswith(b"https://"):  # absolute-form
            target = b"/" + target.split(b"/", 3)[-1] if target.count(b"/") >= 3 else b"/"
        return self.asgi_socket if target.startswith(self.asgi_prefixes) else self.wsgi_socket

    async def handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        # A connection ended by the drain on stop is cancelled: that is its normal end, not an error
        # for asyncio's stream callback to log as a traceback.
        with contextlib.suppress(asyncio.CancelledError):
            await self._handle(client_reader, client_writer)

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        peer = client_writer.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        if len(self.connections) >= MAX_CONNECTIONS or self.per_client[client] >= MAX_PER_CLIENT:
            await self._refuse(
                client_writer, "503 Service Unavailable", "too_many_connections", "Too many connections."
            )
            await self._linger(client_reader, client_writer)  # what the client sends meanwhile
            with contextlib.suppress(Exception):
                client_writer.close()
            return
        self.connections[task] = False
        self.per_client[client] += 1
        upstream: socket.socket | None = None
        body: IO[bytes] | None = None
        pumps: list[asyncio.Future[None]] = []
        try:
            try:
                head = await asyncio.wait_for(client_reader.readuntil(b"\r\n\r\n"), timeout=HEAD_SECONDS)
            except asyncio.LimitOverrunError:
                await self._refuse(
                    client_writer,
                    "431 Request Header Fields Too Large",
                    "headers_too_large",
                    f"The request head is larger than {MAX_HEAD} bytes.",
                )
                return
            except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                return
            if b"\n" in head.replace(b"\r\n", b""):
                # A line ended by a bare LF is a line to granian and daphne and none to us: its
                # Content-Length or X-Forwarded-For would pass unseen.
                await self._refuse(
                    client_writer, "400 Bad Request", "bad_head", "Lines of the request head must end with CRLF."
                )
                await self._linger(client_reader, client_writer)  # what the client may still send
                return
            path = self.upstream_for(head.split(b"\r\n", 1)[0])
            self.connections[task] = path == self.asgi_socket
            if path == self.wsgi_socket:
                try:
                    length, _ = body_framing(head)
                    if length is None or length > ASK_FIRST_ABOVE:
                        # Authentication and throttles first: an anonymous or throttled client is
                        # answered while its body is still unsent, and none of it is read.
                        refusal, limit = await self._admission(head, peer)
                        if refusal is not None:
                            with contextlib.suppress(ConnectionError):
                                client_writer.write(refusal)
                                await client_writer.drain()
                            await self._linger(client_reader, client_writer)
                            return
                    else:
                        limit = self.max_body
                    head, body = await self._buffered(head, client_reader, client_writer, limit)
                except BadFraming as refusal:
                    await self._refuse(client_writer, refusal.status, refusal.code, refusal.message)
                    await self._linger(client_reader, client_writer)  # the client may still be sending
                    return
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
            upstream = await self._connect(path)
            if upstream is None:
                await self._refuse(
                    client_writer,
                    "502 Bad Gateway",
                    "bad_gateway",
                    "The application server is not ready yet; retry in a moment.",
                )
                return
            request_head = forwarded_head(head, peer)
            # The server side is a plain socket, not a stream transport: a transport that fails to
            # write (the server closed without reading the whole body, as for a 401 before a large
            # upload) closes itself for reading too, and the answer waiting in the socket was lost.
            to_upstream = asyncio.ensure_future(self._to_upstream(request_head, body, client_reader, upstream))
            to_client = asyncio.ensure_future(self._to_client(upstream, client_writer))
            pumps += [to_upstream, to_client]
            # The response side decides: once the server has finished (closed), the exchange is over.
            await to_client
            to_upstream.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await to_upstream
            # The client may still be sending the body the server did not read: end our side, and
            # drain the rest, so that closing does not reset the connection under the answer.
            await self._linger(client_reader, client_writer)
        finally:
            self.connections.pop(task, None)
            self.per_client[client] -= 1
            if self.per_client[client] <= 0:
                del self.per_client[client]
            for pump in pumps:  # cancelled midway (a stream ended on stop): no task left pending
                pump.cancel()
            if upstream is not None:
                upstream.close()
            if body is not None:
                body.close()
            with contextlib.suppress(Exception):
                client_writer.close()

    async def _buffered(
        self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, max_body: int
    ) -> tuple[bytes, IO[bytes]]:
        """The request's head and its whole body (at most `max_body` bytes), read before any server
        sees the request."""
        length, expect_continue = body_framing(head)
        too_large = BadFraming("413 Content Too Large", "body_too_large", f"The body is larger than {max_body} bytes.")
        if length is not None and length > max_body:
            raise too_large
        if expect_continue and length != 0:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
        # In memory up to a megabyte, in a private temporary file beyond (the process's umask).
        body: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)
        try:
            if length is not None:
                await self._copy(reader, body, length)
                size = length
            else:  # chunked: each chunk's size line, its bytes, CRLF; a 0 chunk and trailers end it
                size = 0
                while True:
                    size_line = await self._read(reader.readuntil(b"\r\n"))
                    digits = size_line.split(b";", 1)[0].strip()
                    if not digits or len(digits) > 15 or any(c not in b"0123456789abcdefABCDEF" for c in digits):
                        raise BadFraming("400 Bad Request", "bad_chunk", "A chunk size is not valid.")
                    chunk_size = int(digits, 16)
                    if chunk_size == 0:
                        while await self._read(reader.readuntil(b"\r\n")) != b"\r\n":
                            pass  # trailers, dropped
                        break
                    size += chunk_size
                    if size > max_body:
                        raise too_large
                    await self._copy(reader, body, chunk_size)
                    if await self._read(reader.readexactly(2)) != b"\r\n":
                        raise BadFraming("400 Bad Request", "bad_chunk", "A chunk does not end with CRLF.")
        except BaseException:
            body.close()
            raise
        body.seek(0)
        return with_length(head, size), body

    async def _admission(self, head: bytes, peer: object) -> tuple[bytes | None, int]:
        """Ask the WSGI server whether this request may send its body: (None, the largest body it
        may send) if so, else (the server's answer, its refusal, to pass to the client, 0)."""
        request_line, _, rest = head.partition(b"\r\n")
        method, _, target = request_line.partition(b" ")
        dropped = (b"expect", b"transfer-encoding", b"content-length", b"connection")
        lines = [line for line in rest.split(b"\r\n") if line and line.split(b":", 1)[0].strip().lower() not in dropped]
        question = forwarded_head(b"\r\n".join([ADMISSION_METHOD.encode() + b" " + target, *lines, b"", b""]), peer)
        question = question[:-2] + b"%s: %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n" % (
            ADMISSION_HEADER.encode(),
            method,
        )
        upstream = await self._connect(self.wsgi_socket)
        if upstream is None:
            return _answer(
                "502 Bad Gateway", "bad_gateway", "The application server is not ready yet; retry in a moment."
            ), 0
        loop = asyncio.get_running_loop()
        answer = b""
        try:
            async with asyncio.timeout(ADMISSION_SECONDS):
                await loop.sock_sendall(upstream, question)
                while len(answer) < MAX_ADMISSION_ANSWER and (data := await loop.sock_recv(upstream, CHUNK)):
                    answer += data
        except (TimeoutError, ConnectionError, OSError):
            answer = b""
        finally:
            upstream.close()
        answer_head = answer.split(b"\r\n\r\n", 1)[0].lower()
        granted = f"\r\n{ADMISSION_HEADER.lower()}: granted".encode()
        if answer_head.startswith((b"http/1.1 204", b"http/1.0 204")) and granted in answer_head:
            return None, min(self.max_body, _limit_in(answer_head))
        if not answer_head.startswith(b"http/"):
            return _answer("502 Bad Gateway", "bad_gateway", "The application server did not answer."), 0
        return answer, 0

    @staticmethod
    async def _read(step: Any) -> bytes:
        """One read of the body, at most BODY_IDLE_SECONDS of silence."""
        try:
            return bytes(await asyncio.wait_for(step, timeout=BODY_IDLE_SECONDS))
        except TimeoutError:
            raise BadFraming("408 Request Timeout", "body_timeout", "The body stopped arriving.") from None
        except asyncio.LimitOverrunError:
            raise BadFraming("400 Bad Request", "bad_chunk", "A chunk size line is too long.") from None

    async def _copy(self, reader: asyncio.StreamReader, body: IO[bytes], length: int) -> None:
        left = length
        while left:
            chunk = await self._read(reader.read(min(CHUNK, left)))
            if not chunk:
                raise asyncio.IncompleteReadError(b"", length)
            body.write(chunk)
            left -= len(chunk)

    @staticmethod
    async def _refuse(writer: asyncio.StreamWriter, status: str, code: str, message: str) -> None:
        with contextlib.suppress(ConnectionError):  # the client may have given up meanwhile
            writer.write(_answer(status, code, message))
            await writer.drain()

    async def drain(self) -> None:
        """On stop: end the streams now and give the plain requests in flight DRAIN_SECONDS to finish."""
        for task, is_stream in list(self.connections.items()):
            if is_stream:
                task.cancel()
        pending = list(self.connections)
        if pending:
            _, late = await asyncio.wait(pending, timeout=DRAIN_SECONDS)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

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
    async def _to_upstream(
        head: bytes, body: IO[bytes] | None, reader: asyncio.StreamReader, upstream: socket.socket
    ) -> None:
        """The request (its buffered body, if any), then whatever else the client sends, then EOF
        once the client has sent everything."""
        loop = asyncio.get_running_loop()
        try:
            await loop.sock_sendall(upstream, head)
            while body is not None and (data := body.read(CHUNK)):
                await loop.sock_sendall(upstream, data)
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
    server = await asyncio.start_server(router.handle, host, port, limit=MAX_HEAD, backlog=1024)
    stop = router.stopping  # also ends the waits for a server that is not accepting yet
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    addresses = ", ".join(str(sock.getsockname()) for sock in server.sockets)
    print(f"front door listening on {addresses}", flush=True)
    await stop.wait()
    server.close()  # stop accepting; the connections already accepted go on
    in_flight = len(router.connections)
    print(f"front door draining {in_flight} connection{'s' if in_flight != 1 else ''}", flush=True)
    await router.drain()
    print("front door stopped", flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--wsgi-socket", required=True)
    parser.add_argument("--asgi-socket", required=True)
    parser.add_argument("--asgi-prefix", action="append", default=[])
    parser.add_argument("--max-body", type=int, default=DEFAULT_MAX_BODY, help="largest request body, in bytes")
    args = parser.parse_args(argv)
    router = Router(
        args.wsgi_socket,
        args.asgi_socket,
        args.asgi_prefix or ["/ws/", "/progress/events", "/pool/events"],
        max_body=args.max_body,
    )
    try:
        import uvloop

        uvloop.run(serve(args.host, args.port, router))
    except ImportError:  # pragma: no cover - uvloop is a pinned dependency
        asyncio.run(serve(args.host, args.port, router))


if __name__ == "__main__":
    main()
