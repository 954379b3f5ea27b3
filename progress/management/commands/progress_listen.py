"""Run the progress socket listener (started by `manage.py serve` through ProgressConfig)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from progress.listener import Listener


class Command(BaseCommand):
    help = "Listen on the progress UNIX sockets (SEQPACKET and newline-framed STREAM) until stopped."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--socket", type=Path, help="SEQPACKET socket path (default PROGRESS_SOCKET)")
        parser.add_argument("--stream-socket", type=Path, help="STREAM socket path (default PROGRESS_STREAM_SOCKET)")

    def handle(self, *args: Any, **options: Any) -> None:
        async def main() -> None:
            listener = Listener(options["socket"], options["stream_socket"])
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, listener.stop)
            await listener.serve()

        asyncio.run(main())
