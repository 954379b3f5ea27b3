"""Run one of the platform's processes for supervisord: named output, bounded stop, no leftovers.

    python -m coordinator.serving.supervised --name NAME [--grace SECONDS] [--socket PATH] -- COMMAND [ARGS...]

- Every line the command writes (stdout and stderr) is printed as `NAME | line`: supervisord
  passes its children's output on as it is, and one terminal shows every process.
- The command runs in a session of its own, and SIGINT/SIGTERM are forwarded to its main process
  only. A django-q2 cluster must be stopped through its main process (the sentinel), which then
  stops its workers in order; when every worker gets SIGTERM at the same moment, the sentinel
  waits for them forever. granian and daphne stop their own workers the same way.
- What has not stopped `--grace` seconds after the signal is killed with its whole group.
- When the command ends, by itself or killed, whatever is left in its group is killed: a granian
  main process or a cluster sentinel killed with SIGKILL leaves its workers behind, still holding
  the socket or the queue, and the restarted process must start alone.
- `--socket PATH`: the UNIX socket the command listens on. A command killed with SIGKILL leaves
  it behind, and granian and daphne refuse to bind over it; it is removed before each start when
  nothing answers on it.
- This wrapper gets SIGTERM if supervisord dies, even by SIGKILL, and so does the command if this
  wrapper dies: nothing outlives the supervisor.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import IO

PR_SET_PDEATHSIG = 1
WAIT_STEP_SECONDS = 0.2


def _die_with_parent() -> None:
    """SIGTERM to this process when its parent dies (even by SIGKILL)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # not Linux: the grace-period kill below still applies
        pass


def _copy_lines(source: IO[bytes], name: str) -> None:
    prefix = f"{name:<8}| ".encode()
    out = sys.stdout.buffer
    for line in iter(source.readline, b""):
        out.write(prefix + line if line.endswith(b"\n") else prefix + line + b"\n")
        out.flush()


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _remove_if_dead(path: str) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except FileNotFoundError:
            return
        except OSError:  # refused: a leftover of a process that was killed
            os.unlink(path)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    name, grace, sockets = "", 8.0, []
    while args and args[0] != "--":
        if args[0] == "--name":
            name, args = args[1], args[2:]
        elif args[0] == "--socket":
            sockets.append(args[1])
            args = args[2:]
        elif args[0] == "--grace":
            grace, args = float(args[1]), args[2:]
        else:
            break
    if args[:1] == ["--"]:
        args = args[1:]
    if not args or not name:
        print(__doc__, file=sys.stderr)
        return 2
    _die_with_parent()
    for path in sockets:
        _remove_if_dead(path)
    child = subprocess.Popen(
        args, start_new_session=True, preexec_fn=_die_with_parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert child.stdout is not None
    copier = threading.Thread(target=_copy_lines, args=(child.stdout, name), daemon=True)
    copier.start()
    stop_deadline: float | None = None

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal stop_deadline
        if stop_deadline is None:
            stop_deadline = time.monotonic() + grace
        if child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while True:
        # Short waits: a signal handler cannot end a wait already in progress (the call is resumed).
        try:
            code = child.wait(timeout=WAIT_STEP_SECONDS)
            break
        except subprocess.TimeoutExpired:
            if stop_deadline is not None and time.monotonic() > stop_deadline:
                print(f"{name:<8}| still running {grace:g} s after the stop signal: SIGKILL", flush=True)
                _kill_group(child.pid)
                stop_deadline = float("inf")
    _kill_group(child.pid)  # the workers of a main process that was killed
    copier.join(timeout=5)
    # A child ended by a signal reports -N; a shell would say 128 + N.
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main())
