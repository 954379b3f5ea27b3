"""Run the platform's processes as one supervised group (built on honcho's process manager).

Output of each process is prefixed with its name; Ctrl-C or SIGTERM stops all of them; if one
dies on its own, the others are stopped and the group exits non-zero.
"""

from __future__ import annotations

import shlex
import signal
import threading
from dataclasses import dataclass, field

import honcho.manager
import psutil
from honcho.manager import SIGNALS, Manager

# honcho SIGKILLs whatever has not stopped 5 s after SIGTERM; a django-q2 cluster finishing its
# current jobs and granian finishing its in-flight requests (it kills a worker still busy after
# 10 s, see serve.GRACEFUL_SECONDS) need longer to stop cleanly.
honcho.manager.KILL_WAIT = 20


@dataclass(frozen=True)
class ProcessSpec:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


class _Group(Manager):  # type: ignore[misc]
    """honcho's Manager, remembering whether the stop came from a signal or from a dying child."""

    stopped_by_signal = False
    returncode: int | None = None

    def terminate(self) -> None:
        signal_codes = {SIGNALS[signal.SIGINT]["rc"], SIGNALS[signal.SIGTERM]["rc"]}
        no_child_stopped = not any("returncode" in proc for proc in self._processes.values())
        if self.returncode in signal_codes and no_child_stopped:
            self.stopped_by_signal = True
        super().terminate()

    def watch_for_dead_children(self, stop: threading.Event) -> None:
        """Notice a child that died while a grandchild still holds its output pipe open.

        honcho learns that a process stopped when its output reaches EOF; a granian main process
        killed with SIGKILL leaves its workers running (still answering requests) and holding the
        pipe, so the group would go on with a web server nobody supervises. Checking the pids
        themselves closes that gap: the group is stopped (killpg also reaches the orphans, which
        share the dead process's group).
        """
        while not stop.wait(0.5):
            for name, proc in list(self._processes.items()):
                pid = proc.get("pid")
                if pid is None or "returncode" in proc or self._terminating:
                    continue
                try:
                    dead = psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
                except psutil.NoSuchProcess:
                    dead = True
                if dead:
                    self._system_print(f"{name} (pid {pid}) died\n")
                    if self.returncode is None:
                        self.returncode = 1
                    self.terminate()


def run_group(specs: list[ProcessSpec], base_env: dict[str, str]) -> int:
    """Start every process, wait until the group stops, and return the exit status for the command."""
    group = _Group()
    for spec in specs:
        # `exec` so the shell honcho starts is replaced by the process itself: signals reach it directly.
        group.add_process(spec.name, "exec " + shlex.join(spec.argv), env={**base_env, **spec.env})
    stop_watching = threading.Event()
    watcher = threading.Thread(target=group.watch_for_dead_children, args=(stop_watching,), daemon=True)
    watcher.start()
    try:
        group.loop()
    finally:
        stop_watching.set()
    if group.stopped_by_signal:
        return 0
    # A process ended by itself: whatever its own status, the platform is down, so fail.
    return group.returncode if group.returncode else 1
