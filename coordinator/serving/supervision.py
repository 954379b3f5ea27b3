"""Run the platform's processes under supervisord: what dies is started again, stopping is bounded.

`manage.py serve` writes a supervisord configuration under RUN_DIR and runs supervisord in the
foreground. Each process runs under `coordinator.serving.supervised` (its output prefixed with its
name, stop signals to its main process only, its leftovers killed when it ends, see there) and:

- is started again when it exits or is killed; one that dies within START_SECONDS of starting is
  retried with supervisord's backoff (1 s, 2 s, 3 s, ... between attempts);
- makes `serve` give up, stopping everything with a non-zero exit and a message naming it, when it
  dies GIVE_UP_DEATHS times within GIVE_UP_WINDOW_SECONDS or cannot be started at all. The
  counting, the job cluster's watchdog and the record that /healthz and the admin show live in
  `coordinator.serving.watchdog`, a supervisord event listener: outside every process it watches.

Stopping (SIGTERM or Ctrl-C to `serve`) happens in two stages: first the front door (it stops
accepting and lets the requests in flight finish), then every other process at once. Each stage
takes at most STOP_GRACE_SECONDS plus a margin, so `serve` exits within STOP_BOUND_SECONDS; past
that it kills whatever remains. Jobs cut off by a stop are recovered by the next cluster
(docs/jobs.md).
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO

import psutil

# What each process gives its requests or jobs in flight after SIGTERM (granian's and the front
# door's drain). Its wrapper kills what still runs a little later, and supervisord's own kill
# comes later still: the wrapper has always ended by then.
STOP_GRACE_SECONDS = 6
_WRAPPER_KILL_AFTER = STOP_GRACE_SECONDS + 2
_SUPERVISOR_STOP_WAIT = _WRAPPER_KILL_AFTER + 2
STOP_STAGES = 2  # the front door, then everything else
STOP_BOUND_SECONDS = STOP_STAGES * _SUPERVISOR_STOP_WAIT + 5
START_SECONDS = 5  # a process that dies sooner than this after starting has failed to start
START_RETRIES = 4  # with backoff; then supervisord marks it FATAL and `serve` gives up
GIVE_UP_DEATHS = 5
GIVE_UP_WINDOW_SECONDS = 60.0
STATE_FILE = "supervision.json"
FIRST_STAGE = ("front",)  # stopped first: stops accepting while the servers behind it still answer


@dataclass(frozen=True)
class ProcessSpec:
    name: str
    argv: list[str]
    socket: Path | None = None  # the UNIX socket it listens on (removed before a restart when dead)


def _escape(value: str) -> str:
    """supervisord expands `%(name)s` in its values: a literal % is written %%."""
    return value.replace("%", "%%")


def _program(spec: ProcessSpec, priority: int) -> str:
    wrapped = [
        sys.executable,
        "-m",
        "coordinator.serving.supervised",
        "--name",
        spec.name,
        "--grace",
        str(_WRAPPER_KILL_AFTER),
        *(["--socket", str(spec.socket)] if spec.socket else []),
        "--",
        *spec.argv,
    ]
    return f"""
[program:{spec.name}]
command={_escape(shlex.join(wrapped))}
priority={priority}
autorestart=true
startsecs={START_SECONDS}
startretries={START_RETRIES}
stopsignal=TERM
stopwaitsecs={_SUPERVISOR_STOP_WAIT}
killasgroup=true
redirect_stderr=true
stdout_logfile=/dev/stdout
stdout_logfile_maxbytes=0
"""


def supervisord_config(specs: list[ProcessSpec], run_dir: Path, password: str) -> str:
    """The configuration: one program per process, grouped by stop stage, and the watchdog. The
    control socket is this user's alone (0700) and asks for a password too, which only the
    configuration file (0600) and the watchdog's environment hold."""
    first = [spec for spec in specs if spec.name in FIRST_STAGE]
    rest = [spec for spec in specs if spec.name not in FIRST_STAGE]
    parts = [
        f"""[supervisord]
nodaemon=true
; in the foreground supervisord logs to its stdout as well: the file would repeat every line
logfile=/dev/null
logfile_maxbytes=0
loglevel=info
pidfile={_escape(str(run_dir / "supervisord.pid"))}
{"user=root" if os.geteuid() == 0 else ""}
environment=SUPERVISOR_USERNAME="serve",SUPERVISOR_PASSWORD="{password}"

[unix_http_server]
file={_escape(str(run_dir / "supervisor.sock"))}
chmod=0700
username=serve
password={password}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[eventlistener:watchdog]
command={_escape(shlex.join([sys.executable, "-m", "coordinator.serving.watchdog"]))}
events=PROCESS_STATE,TICK_5
priority=1
autorestart=true
stdout_logfile=NONE
stderr_logfile=/dev/stdout
stderr_logfile_maxbytes=0
"""
    ]
    # supervisord stops one group at a time, highest priority first, all of a group's processes at once.
    parts += [_program(spec, 100) for spec in rest]
    parts.append(f"\n[group:platform]\nprograms={','.join(spec.name for spec in rest)}\npriority=100\n")
    parts += [_program(spec, 900) for spec in first]
    return "".join(parts)


def supervision_state(run_dir: Path) -> dict[str, object] | None:
    """What the watchdog recorded for the running `serve` (restarts, a reason it gave up), or None."""
    try:
        loaded = json.loads((run_dir / STATE_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None


def run_supervised(specs: list[ProcessSpec], env: dict[str, str], run_dir: Path) -> int:
    """Run supervisord until it stops, and return the exit status for `serve`."""
    config = run_dir / "supervisord.conf"
    config.write_text(supervisord_config(specs, run_dir, secrets.token_urlsafe(24)))
    (run_dir / STATE_FILE).unlink(missing_ok=True)
    supervisord = str(Path(sys.executable).parent / "supervisord")
    # A session of its own: Ctrl-C reaches `serve` alone, which asks supervisord to stop once.
    # Its output (and every process's, which it opens as /dev/stdout) comes through a pipe that
    # `serve` copies: writers that each opened a file named /dev/stdout anew would overwrite one
    # another's lines when `serve`'s output is a regular file.
    supervisor = subprocess.Popen(
        [supervisord, "--nodaemon", "-c", str(config)], env=env, start_new_session=True, stdout=subprocess.PIPE
    )
    assert supervisor.stdout is not None
    copier = threading.Thread(target=_copy_output, args=(supervisor.stdout,), daemon=True)
    copier.start()
    stop_requested = False

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal stop_requested
        stop_requested = True
        if supervisor.poll() is None:
            supervisor.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while True:
        try:
            supervisor.wait(timeout=STOP_BOUND_SECONDS if stop_requested else None)
            break
        except subprocess.TimeoutExpired:
            print(f"serve: still running {STOP_BOUND_SECONDS} s after the stop; killing what is left", flush=True)
            _kill_tree(supervisor.pid)
    copier.join(timeout=5)
    state = supervision_state(run_dir) or {}
    gave_up = state.get("gave_up")
    if gave_up:
        print(f"serve: gave up: {gave_up}", file=sys.stderr, flush=True)
        return 1
    if not stop_requested:
        print(f"serve: supervisord ended by itself (status {supervisor.returncode})", file=sys.stderr, flush=True)
        return 1
    return 0


def _copy_output(source: IO[bytes]) -> None:
    with open(sys.stdout.fileno(), "wb", buffering=0, closefd=False) as out:
        while chunk := source.read1(65536):  # type: ignore[attr-defined]
            out.write(chunk)


def _kill_tree(pid: int) -> None:
    """SIGKILL to supervisord and every process group under it (each child runs in a group of its own)."""
    try:
        tree = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    own_group = os.getpgid(0)
    for process in tree:
        try:
            group = os.getpgid(process.pid)
            if group != own_group:
                os.killpg(group, signal.SIGKILL)
            else:
                process.kill()
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
