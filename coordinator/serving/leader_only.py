"""Run a command so that stop signals reach only its main process, never its whole group.

honcho stops a process by signalling its process group. A django-q2 cluster must be stopped
through its main process (the sentinel), which then stops its workers in order; when every worker
gets SIGTERM at the same moment the sentinel waits for them forever and the cluster has to be
killed. This wrapper is the group honcho signals: it runs the command in a session of its own,
forwards SIGINT/SIGTERM to the command's main process only, and kills the command's group if it
has not stopped within the grace period. `serve` gives a grace shorter than honcho's kill wait:
honcho's SIGKILL reaches only this wrapper's group, so the cluster must be gone before it comes.

    python -m coordinator.serving.leader_only [--grace SECONDS] -- COMMAND [ARGS...]
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from types import FrameType

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child: receive SIGTERM if this wrapper dies (even by SIGKILL)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # not Linux: the grace-period kill below still applies
        pass


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    grace = 4.0
    if args[:1] == ["--grace"]:
        grace, args = float(args[1]), args[2:]
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        print(__doc__, file=sys.stderr)
        return 2
    child = subprocess.Popen(args, start_new_session=True, preexec_fn=_die_with_parent)
    stopping = False

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        if child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while True:
        try:
            code = child.wait(timeout=grace if stopping else None)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            code = child.wait()
        # A child ended by a signal reports -N; a shell would say 128 + N.
        return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main())
