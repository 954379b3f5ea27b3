"""daphne, with the values of `token=` in its access log replaced: SSE and WebSocket clients that
cannot send headers pass their JWT as `?token=`, and a log line must not carry a credential.

daphne writes its access log to standard output (verbosity 1, the default); this runs daphne's own
command line with standard output behind a filter. Usage: `python -m coordinator.serving.daphne_main
<daphne arguments>`.
"""

from __future__ import annotations

import re
import sys
from typing import Any, TextIO

from daphne.cli import CommandLineInterface

TOKEN_VALUE = re.compile(r"([?&](?:token|access_token)=)[^&\s\"]+")


class RedactedStream:
    """A text stream that writes through to `stream` with every `token=` value replaced."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        return self.stream.write(TOKEN_VALUE.sub(r"\1[redacted]", text))

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def main(argv: list[str] | None = None) -> None:
    sys.stdout = RedactedStream(sys.stdout)  # type: ignore[assignment]
    CommandLineInterface().run(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
