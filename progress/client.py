"""Report progress from any Python script, without Django:

    from progress.client import stream

    with stream("nightly backup") as s:
        for i, path in enumerate(paths):
            s.send(f"copying {path}", percent=100 * i / len(paths))

The stream's name is the first packet on the SEQPACKET socket, each `send()` one more packet, and
leaving the block disconnects, which ends the stream. An exception inside the block first sends
`failed: <error>` as the last message, then ends the stream and propagates. The socket is
`PROGRESS_SOCKET`, else `$COORDINATOR_VAR_DIR/run/progress.sock`, else the checkout's
`var/run/progress.sock`. If nothing listens there, `required=False` (the default) makes the stream
a no-op with one warning: progress reporting should not stop the work it reports on.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from types import TracebackType

MAX_NAME = 100
MAX_MESSAGE = 1000


def default_socket_path() -> Path:
    if os.environ.get("PROGRESS_SOCKET"):
        return Path(os.environ["PROGRESS_SOCKET"])
    var_dir = os.environ.get("COORDINATOR_VAR_DIR") or str(Path(__file__).resolve().parent.parent / "var")
    return Path(var_dir) / "run" / "progress.sock"


class Stream:
    """One progress stream on the listener's SEQPACKET socket."""

    def __init__(self, name: str, path: str | Path | None = None, *, required: bool = False) -> None:
        self.name = name
        self.path = Path(path) if path else default_socket_path()
        self.required = required
        self.sock: socket.socket | None = None

    def open(self) -> Stream:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            sock.connect(str(self.path))
        except OSError as exc:
            sock.close()
            if self.required:
                raise
            print(f"progress: cannot reach {self.path} ({exc}); not reporting progress", file=sys.stderr)
            return self
        self.sock = sock
        self._packet(self.name[:MAX_NAME])
        return self

    def send(self, message: str, percent: float | None = None) -> None:
        """Replace the stream's message; with `percent`, prefix it as `[42%]` (also shown as a bar)."""
        if percent is not None:
            message = f"[{max(0.0, min(100.0, float(percent))):.3g}%] {message}"
        self._packet(message[:MAX_MESSAGE])

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _packet(self, text: str) -> None:
        if self.sock is None:
            return
        try:
            self.sock.send(text.replace("\n", " ").encode() + b"\n")
        except OSError:
            self.close()  # the listener went away; the work goes on
            if self.required:
                raise

    def __enter__(self) -> Stream:
        return self.open()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None:
            self._packet(f"failed: {exc_type.__name__ if exc_type else 'error'}: {exc}"[:MAX_MESSAGE])
        self.close()


def stream(name: str, path: str | Path | None = None, *, required: bool = False) -> Stream:
    """A context manager reporting progress under `name` (see the module docstring)."""
    return Stream(name, path, required=required)
