"""Helper processes of `bench.progress` (kept out of the orchestrator so they do not share its GIL).

`python -m bench.progress_agents produce SOCKET STREAMS RATE SECONDS RUN` — STREAMS SEQPACKET
connections send RATE messages a second in total for SECONDS, each `RUN SEQ UNIX_TIME`; prints
`{"sent": N}`.
`python -m bench.progress_agents read URL CLIENTS SECONDS RUN RECONNECT` — CLIENTS SSE readers
(raw HTTP/1.0) collect the `msg` events of RUN for SECONDS; with RECONNECT=1 reader 0 drops its
connection halfway and comes back with `Last-Event-ID`. Prints per reader the sequence numbers
received and all latencies.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from urllib.parse import urlsplit


def produce(path: str, streams: int, rate: float, seconds: float, run: str) -> None:
    socks = []
    for i in range(streams):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sock.connect(path)
        sock.send(f"bench {run} producer {i}\n".encode())
        socks.append(sock)
    time.sleep(0.5)  # let the `new` events pass before timing starts
    start = time.monotonic()
    sent = 0
    while True:
        elapsed = time.monotonic() - start
        if elapsed >= seconds:
            break
        due = int(elapsed * rate) + 1
        while sent < due:
            socks[sent % streams].send(f"{run} {sent} {time.time():.6f}\n".encode())
            sent += 1
        time.sleep(0.001)
    time.sleep(0.2)
    for sock in socks:
        sock.close()
    print(json.dumps({"sent": sent}))


class Reader:
    def __init__(self, url: str, run: str) -> None:
        self.url = urlsplit(url)
        self.run = run
        self.seqs: set[int] = set()
        self.latencies: list[float] = []
        self.last_id = ""
        self.reconnects = 0

    async def session(self, until: float) -> None:
        reader, writer = await asyncio.open_connection(self.url.hostname, self.url.port)
        headers = (
            f"GET {self.url.path}?{self.url.query} HTTP/1.0\r\nHost: {self.url.netloc}\r\nAccept: text/event-stream\r\n"
        )
        if self.last_id:
            headers += f"Last-Event-ID: {self.last_id}\r\n"
        writer.write((headers + "\r\n").encode())
        buffer = b""
        head_done = False
        try:
            while True:
                remaining = until - time.monotonic()
                if remaining <= 0:
                    return
                try:
                    data = await asyncio.wait_for(reader.read(262144), timeout=remaining)
                except TimeoutError:
                    return
                if not data:
                    return
                now = time.time()
                buffer += data
                if not head_done:
                    if b"\r\n\r\n" not in buffer:
                        continue
                    buffer = buffer.split(b"\r\n\r\n", 1)[1]
                    head_done = True
                *blocks, buffer = buffer.split(b"\n\n")
                for block in blocks:
                    self.frame(block.decode(), now)
        finally:
            writer.close()

    def frame(self, block: str, now: float) -> None:
        kind = data = ""
        for line in block.split("\n"):
            if line.startswith("id: "):
                self.last_id = line[4:]
            elif line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
        if kind != "msg":
            return
        for text in json.loads(data).values():
            parts = text.split(" ")
            if len(parts) == 3 and parts[0] == self.run:
                self.seqs.add(int(parts[1]))
                self.latencies.append(now - float(parts[2]))


async def read(url: str, clients: int, seconds: float, run: str, reconnect: bool) -> None:
    readers = [Reader(url, run) for _ in range(clients)]
    end = time.monotonic() + seconds

    async def follow(index: int, reader: Reader) -> None:
        if reconnect and index == 0:
            await reader.session(time.monotonic() + seconds / 2)
            await asyncio.sleep(0.5)  # gone for a while: events pile up
            reader.reconnects += 1
        await reader.session(end)

    await asyncio.gather(*(follow(i, r) for i, r in enumerate(readers)))
    print(json.dumps([{"seqs": sorted(r.seqs), "latencies": r.latencies, "reconnects": r.reconnects} for r in readers]))


def main() -> None:
    mode, *args = sys.argv[1:]
    if mode == "produce":
        produce(args[0], int(args[1]), float(args[2]), float(args[3]), args[4])
    else:
        asyncio.run(read(args[0], int(args[1]), float(args[2]), args[3], args[4] == "1"))


if __name__ == "__main__":
    main()
