"""supervisord's event listener for `serve`: counts deaths, gives up, and unfreezes the job cluster.

It runs beside the processes it watches, never inside one of them: a django-q2 cluster can freeze
whole (a worker killed while it held the task queue's read lock blocks the other workers and the
broker loop, and the recovery sweep inside that loop with them), so its recovery cannot live there.

On every process event it updates RUN_DIR/supervision.json (restarts per process, the last exit
and why), which /healthz and the admin read. A process that died GIVE_UP_DEATHS times within
GIVE_UP_WINDOW_SECONDS, or that supervisord could not start (FATAL), makes it record why and
shut supervisord down: `serve` then exits non-zero with that message.

Every 5 s (TICK_5) it runs the checks the apps declare (`AppConfig.serve_watches()`): the jobs
app asks whether the clusters make progress (`jobs.selectors.cluster_stall`); when the cluster
that `serve` runs has been up for JOBS_STALL_SECONDS and makes none, it is stopped (its wrapper
kills what does not stop), the jobs it had fetched are queued again, and it is started again.
Jobs its workers were running are recovered by the new cluster's sweep.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xmlrpc.client import Fault

from supervisor import childutils

from coordinator.serving.supervision import GIVE_UP_DEATHS, GIVE_UP_WINDOW_SECONDS, STATE_FILE

logger = logging.getLogger("coordinator.watchdog")


class Watchdog:
    def __init__(self, run_dir: Path, rpc: Any) -> None:
        self.run_dir = run_dir
        self.rpc = rpc
        self.deaths: dict[str, deque[float]] = {}
        self.state: dict[str, Any] = {"started_at": time.time(), "processes": {}, "gave_up": None}
        self.save()

    def save(self) -> None:
        temporary = self.run_dir / f".{STATE_FILE}.tmp"
        temporary.write_text(json.dumps(self.state, indent=1))
        temporary.replace(self.run_dir / STATE_FILE)

    def _record(self, name: str) -> dict[str, Any]:
        processes: dict[str, dict[str, Any]] = self.state["processes"]
        return processes.setdefault(name, {"restarts": 0, "last_exit_at": None, "last_exit": None})

    def on_process_event(self, event: str, headers: dict[str, str]) -> None:
        name = headers.get("processname", "")
        if event in ("PROCESS_STATE_EXITED", "PROCESS_STATE_BACKOFF"):
            # EXITED: it ended while running, not by a stop; BACKOFF: it ended while starting.
            now = time.time()
            record = self._record(name)
            record["restarts"] += 1
            record["last_exit_at"] = now
            # (supervisord's own log line above says how: its exit status or signal.)
            record["last_exit"] = "died while starting" if event == "PROCESS_STATE_BACKOFF" else "died"
            logger.warning("%s %s; supervisord starts it again", name, record["last_exit"])
            deaths = self.deaths.setdefault(name, deque())
            deaths.append(now)
            while deaths and deaths[0] < now - GIVE_UP_WINDOW_SECONDS:
                deaths.popleft()
            self.save()
            if len(deaths) >= GIVE_UP_DEATHS:
                self.give_up(f"{name} died {len(deaths)} times within {GIVE_UP_WINDOW_SECONDS:g} s")
        elif event == "PROCESS_STATE_FATAL":
            self.give_up(f"{name} could not be started (it kept exiting while starting)")

    def give_up(self, reason: str) -> None:
        if self.state["gave_up"]:
            return  # stopping already
        logger.error("giving up: %s; stopping everything", reason)
        self.state["gave_up"] = reason
        self.save()
        try:
            self.rpc.supervisor.shutdown()
        except (Fault, OSError) as exc:
            logger.error("supervisord did not take the shutdown: %s", exc)

    def on_tick(self) -> None:
        for watch in _process_watches():
            reason = self._stall(watch)
            if reason is not None:
                self._restart(watch, reason)

    def _stall(self, watch: ProcessWatch) -> str | None:
        try:
            info = self.rpc.supervisor.getProcessInfo(f"platform:{watch.process}")
        except (Fault, OSError):
            return None  # not run by this `serve` (`--no-qcluster`: supervised elsewhere)
        # Up for the whole window (time for its first sign of life), and so restarted at most once
        # per window: a restart that does not help is not repeated in a tight loop.
        if info.get("statename") != "RUNNING" or info["now"] - info["start"] < watch.window_seconds:
            return None
        from django.db import close_old_connections

        from coordinator.selectors import database_is_up

        close_old_connections()
        try:
            if not database_is_up():
                return None  # everything waits for the database; a restart would not help
            return watch.stall()
        except Exception:
            logger.exception("the check of %s failed", watch.process)
            return None

    def _restart(self, watch: ProcessWatch, reason: str) -> None:
        name = f"platform:{watch.process}"
        logger.warning("%s makes no progress (%s): restarting it", watch.process, reason)
        record = self._record(watch.process)
        record["restarts"] += 1
        record["last_exit_at"] = time.time()
        record["last_exit"] = f"was restarted by the watchdog: {reason}"
        self.save()
        try:
            self.rpc.supervisor.stopProcess(name, True)
        except (Fault, OSError) as exc:
            logger.error("stopping %s failed: %s", watch.process, exc)
        try:
            watch.after_stop()
        except Exception:
            logger.exception("cleaning up after %s failed", watch.process)
        try:
            self.rpc.supervisor.startProcess(name, False)
        except (Fault, OSError) as exc:
            logger.error("starting %s failed: %s", watch.process, exc)


@dataclass(frozen=True)
class ProcessWatch:
    """What an app asks the watchdog to watch (`AppConfig.serve_watches()`): the `serve` process
    `process`, restarted when `stall()` names a reason after it has run `window_seconds`;
    `after_stop()` runs between the stop and the start."""

    process: str
    stall: Callable[[], str | None]
    after_stop: Callable[[], object]
    window_seconds: float


def _process_watches() -> list[ProcessWatch]:
    from django.apps import apps

    watches: list[ProcessWatch] = []
    for config in apps.get_app_configs():
        declare = getattr(config, "serve_watches", None)
        if declare is not None:
            watches.extend(ProcessWatch(**watch) for watch in declare())
    return watches


def main() -> None:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "coordinator.settings")
    django.setup()
    from django.conf import settings

    # stdout is supervisord's event protocol: the log (settings.LOGGING) writes to stderr. The
    # environment handed to supervisor's client holds the control socket's address and password.
    watchdog = Watchdog(Path(settings.RUN_DIR), childutils.getRPCInterface(dict(os.environ)))
    while True:
        headers, payload = childutils.listener.wait(sys.stdin, sys.stdout)
        event = headers["eventname"]
        try:
            if event.startswith("PROCESS_STATE"):
                process_headers, _ = childutils.eventdata(payload + "\n")
                watchdog.on_process_event(event, process_headers)
            elif event.startswith("TICK"):
                watchdog.on_tick()
        finally:
            childutils.listener.ok(sys.stdout)


if __name__ == "__main__":
    main()
