"""Run the platform's processes as one supervised group, on honcho's process manager.

Only honcho's public interface is used: `Manager(printer)`, `add_process`, `loop`, `terminate`
and `returncode`. Output of each process is prefixed with its name; Ctrl-C or SIGTERM stops all
of them; if one dies on its own, the others are stopped and the group exits non-zero.

The bound on stopping is honcho's: whatever still runs 5 s after SIGTERM is killed with SIGKILL,
whole process groups. The servers' own grace periods are set below that (`STOP_GRACE_SECONDS`),
so that a clean stop never needs the kill. How the job cluster is stopped is the one exception
to honcho's way of signalling, and lives in coordinator/serving/leader_only.py with its reason.
"""

from __future__ import annotations

import multiprocessing
import shlex
import sys
import threading
from dataclasses import dataclass, field

import psutil
from honcho.manager import Manager
from honcho.printer import Printer

# honcho kills what has not stopped 5 s after SIGTERM; a process given this much time to finish
# its requests or jobs has stopped by then.
STOP_GRACE_SECONDS = 4
# honcho's exit codes for a stop it was told to make (SIGINT, SIGTERM): a requested stop, not a failure.
REQUESTED_STOP_CODES = (130, 143)
WATCH_INTERVAL_SECONDS = 0.5


@dataclass(frozen=True)
class ProcessSpec:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


def dead_processes() -> list[str]:
    """Names of the group's processes whose command has exited while something still holds its output.

    honcho learns that a process stopped when its output reaches EOF; a granian main process
    killed with SIGKILL leaves its workers running (still answering requests) and holding the
    pipe, so the group would go on with a web server nobody supervises. honcho runs each command
    under a `multiprocessing` child named after the process; that child's own child is the
    command, and a command that has exited is a zombie there until honcho reads EOF.
    """
    dead = []
    for runner in multiprocessing.active_children():
        try:
            commands = psutil.Process(runner.pid).children()
        except psutil.NoSuchProcess:
            continue
        for command in commands:
            try:
                if command.status() == psutil.STATUS_ZOMBIE:
                    dead.append(runner.name)
            except psutil.NoSuchProcess:
                continue
    return dead


def _watch(group: Manager, stop: threading.Event) -> None:
    while not stop.wait(WATCH_INTERVAL_SECONDS):
        if group.returncode is not None:
            return  # honcho is stopping the group already (a signal, or a process that ended)
        dead = dead_processes()
        if dead:
            print(f"{', '.join(dead)} died; stopping the group", file=sys.stdout, flush=True)
            group.returncode = 1
            # SIGTERM to each process group: the orphans share the dead process's group.
            group.terminate()
            return


def run_group(specs: list[ProcessSpec], base_env: dict[str, str]) -> int:
    """Start every process, wait until the group stops, and return the exit status for the command."""
    group = Manager(Printer(sys.stdout))
    for spec in specs:
        # `exec` so the shell honcho starts is replaced by the process itself: signals reach it directly.
        group.add_process(spec.name, "exec " + shlex.join(spec.argv), env={**base_env, **spec.env})
    stop_watching = threading.Event()
    watcher = threading.Thread(target=_watch, args=(group, stop_watching), daemon=True)
    watcher.start()
    try:
        group.loop()
    finally:
        stop_watching.set()
    if group.returncode in REQUESTED_STOP_CODES:
        return 0
    # A process ended by itself: whatever its own status, the platform is down, so fail.
    code = group.returncode
    return code if code and code > 0 else 1
