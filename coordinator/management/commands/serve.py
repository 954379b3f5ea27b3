"""`manage.py serve`: start everything the platform runs, as one supervised group.

Embedded default (one address, http://HOST:PORT/): granian (WSGI: REST API, admin) and daphne
(ASGI: WebSocket and SSE) listen on UNIX sockets under var/run/, and a small front door on
HOST:PORT splices each connection to one of them by path (see coordinator/serving/proxy.py and
docs/serving.md). The front door routes a connection by its first request, so granian runs with
HTTP/1.1 keep-alive off there and closes every connection after one response. With
--behind-proxy, granian listens on HOST:PORT (keep-alive on) and daphne on HOST:ASGI_PORT, for a
real reverse proxy (nginx) in front. A django-q2 cluster runs beside them, plus every process an
installed app declares with `AppConfig.serve_processes()`, all under supervisord: what dies is
started again, and SIGTERM stops everything within a bound (coordinator/serving/supervision.py).
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.urls import NoReverseMatch, reverse

from coordinator.serving.preflight import data_make_private, database_problem
from coordinator.serving.proxy import MULTIPART_FRAMING
from coordinator.serving.supervision import STOP_GRACE_SECONDS, ProcessSpec, run_supervised


def _bin(name: str) -> str:
    """A console script installed beside this interpreter (the project's virtualenv)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def granian_argv(
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    uds: Path | None = None,
    workers: int,
    threads: int = 1,
    keep_alive: bool = True,
    access_log: bool = False,
    log_level: str = "info",
) -> list[str]:
    """The command line of the production WSGI server: granian serving `coordinator.wsgi`.

    Listens on HOST:PORT, or on the UNIX socket `uds` (mode 0600: only this user's front door
    connects). `threads` Python threads per worker process; 1 (the default here; granian's own
    is 1024 / workers / 2) answers one request at a time per process with one database
    connection, like gunicorn's sync workers. HTTP/1.1 only. A worker that dies is started
    again (granian's default is to stop the whole server; a worker that keeps dying at start
    still stops it). Details: docs/serving.md, "The WSGI server: granian".
    """
    bind = ["--uds", str(uds), "--uds-permissions", "0o600"] if uds else ["--host", host, "--port", str(port)]
    argv = [
        _bin("granian"),
        "--interface",
        "wsgi",
        "coordinator.wsgi:application",
        *bind,
        "--http",
        "1",
        "--no-ws",
        "--workers",
        str(workers),
        "--blocking-threads",
        str(threads),
        "--workers-kill-timeout",
        str(STOP_GRACE_SECONDS),
        "--respawn-failed-workers",
        "--log-level",
        log_level,
    ]
    if not keep_alive:
        argv.append("--no-http1-keep-alive")
    if access_log:
        argv.append("--access-log")
    return argv


def build_process_specs(
    *, host: str, port: int, workers: int, behind_proxy: bool, asgi_port: int, qcluster: bool, access_log: bool
) -> list[ProcessSpec]:
    """The processes of the platform, in start order."""
    manage = [sys.executable, str(Path(settings.BASE_DIR) / "manage.py")]
    run_dir = Path(settings.RUN_DIR)
    wsgi_socket, asgi_socket = run_dir / "wsgi.sock", run_dir / "asgi.sock"
    if behind_proxy:
        web = granian_argv(host=host, port=port, workers=workers, access_log=access_log)
    else:
        # The front door routes each connection by its first request: one request per connection.
        web = granian_argv(uds=wsgi_socket, workers=workers, keep_alive=False, access_log=access_log)
    # daphne's own command line, its access log with `?token=` values redacted.
    daphne = [sys.executable, "-m", "coordinator.serving.daphne_main", "--proxy-headers"]
    # Twisted's UNIX endpoint chmods its socket to 0666 unless told otherwise: the front door alone
    # (the same user) connects to it.
    private = ["--endpoint", f"unix:{asgi_socket}:mode=600"]
    daphne += ["--bind", host, "--port", str(asgi_port)] if behind_proxy else private
    daphne += ["coordinator.asgi:application"]
    specs = [
        ProcessSpec("web", web, socket=None if behind_proxy else wsgi_socket),
        ProcessSpec("asgi", daphne, socket=None if behind_proxy else asgi_socket),
    ]
    if not behind_proxy:
        proxy = [
            sys.executable,
            "-m",
            "coordinator.serving.proxy",
            "--host",
            host,
            "--port",
            str(port),
            "--wsgi-socket",
            str(wsgi_socket),
            "--asgi-socket",
            str(asgi_socket),
            # The front door buffers each plain request's body before granian sees it: up to the
            # largest body any endpoint accepts, with room for multipart framing.
            "--max-body",
            str(max(settings.DATA_UPLOAD_MAX_MEMORY_SIZE, settings.JOBS_UPLOAD_MAX_BYTES) + MULTIPART_FRAMING),
        ]
        for prefix in settings.ASGI_PATH_PREFIXES:
            proxy += ["--asgi-prefix", prefix]
        specs.append(ProcessSpec("front", proxy))
    if qcluster:
        specs.append(ProcessSpec("jobs", [*manage, "qcluster"]))
    for config in apps.get_app_configs():
        declare = getattr(config, "serve_processes", None)
        if declare is not None:
            specs.extend(ProcessSpec(name, list(argv)) for name, argv in declare())
    return specs


def metrics_directory() -> Path:
    """An empty directory for prometheus-client's multiprocess files, which every process started
    here writes its counts into (PROMETHEUS_MULTIPROC_DIR, var/run/metrics by default): emptied at
    each start, as the library requires, since the files of a previous run would be added in."""
    directory = Path(settings.METRICS_MULTIPROC_DIR or Path(settings.RUN_DIR) / "metrics")
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    return directory


def live_sockets() -> list[Path]:
    """The sockets under RUN_DIR that a running instance answers on (another `serve` of this checkout)."""
    run_dir = Path(settings.RUN_DIR)
    candidates = sorted(run_dir.glob("*.sock")) if run_dir.is_dir() else []
    live = []
    for path in candidates:
        for kind in (socket.SOCK_STREAM, socket.SOCK_SEQPACKET):
            with socket.socket(socket.AF_UNIX, kind) as probe:
                probe.settimeout(2)
                try:
                    probe.connect(str(path))
                except ConnectionRefusedError:
                    break  # nobody listens: a leftover of an instance that was killed
                except OSError:
                    continue  # EPROTOTYPE: a socket of the other kind; try it
                live.append(path)
                break
    return live


def banner(host: str, port: int, behind_proxy: bool) -> str:
    """What `serve` prints on start: where to go, and where scripts report progress."""
    where = f"http://{host}:{port}"
    lines = [f"Coordinator starting at {where}/" + ("  (granian; daphne on the ASGI port)" if behind_proxy else "")]
    for title, name in (("admin", "admin:index"), ("API docs", "docs"), ("live progress", "admin:progress_live")):
        try:
            lines.append(f"  {title + ':':17}{where}{reverse(name)}")
        except NoReverseMatch:
            continue
    progress_socket = getattr(settings, "PROGRESS_SOCKET", None)
    if progress_socket is not None:
        lines.append(f"  {'progress socket:':17}{Path(progress_socket).resolve()}")
    return "\n".join(lines)


class Command(BaseCommand):
    help = "Start the whole platform (WSGI + ASGI servers, job cluster, app listeners) as one group."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=settings.SERVE_HOST, help="COORDINATOR_HOST")
        parser.add_argument("--port", type=int, default=settings.SERVE_PORT, help="COORDINATOR_PORT")
        parser.add_argument(
            "--workers",
            type=int,
            default=settings.SERVE_WSGI_WORKERS,
            help="granian worker processes (WEB_CONCURRENCY; default: one per core)",
        )
        parser.add_argument(
            "--behind-proxy",
            action="store_true",
            help="no front door: granian on --port (keep-alive on), daphne on --asgi-port, for nginx in front",
        )
        parser.add_argument("--asgi-port", type=int, default=None, help="with --behind-proxy (default: port + 1)")
        parser.add_argument("--no-qcluster", action="store_true", help="run job clusters elsewhere")
        parser.add_argument("--access-log", action="store_true", help="log every HTTP request (granian's access log)")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["workers"] < 1:
            raise CommandError("--workers must be at least 1.")
        live = live_sockets()
        if live:
            raise CommandError(
                f"Coordinator is already running from this checkout: {', '.join(map(str, live))} "
                f"answers. Stop that `serve` first, or give this one a directory of its own "
                f"(COORDINATOR_VAR_DIR)."
            )
        problem = database_problem()
        if problem:
            raise CommandError(problem)
        # Everything the platform's processes create from here on (sockets, the SQLite file, exports,
        # the journal, logs) is readable by the service user only, whatever the shell's umask.
        os.umask(0o077)
        for path in data_make_private():  # ... and what the shell created before, as `migrate` does
            self.stdout.write(f"made private (readable by the service user only): {path}")
        Path(settings.RUN_DIR).mkdir(parents=True, exist_ok=True)
        specs = build_process_specs(
            host=options["host"],
            port=options["port"],
            workers=options["workers"],
            behind_proxy=options["behind_proxy"],
            asgi_port=options["asgi_port"] or options["port"] + 1,
            qcluster=not options["no_qcluster"],
            access_log=options["access_log"],
        )
        env = dict(os.environ)
        env.setdefault("DJANGO_SETTINGS_MODULE", "coordinator.settings")
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(settings.BASE_DIR), env.get("PYTHONPATH")]))
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_directory())
        self.stdout.write(self.style.SUCCESS(banner(options["host"], options["port"], options["behind_proxy"])))
        self.stdout.flush()
        status = run_supervised(specs, env, Path(settings.RUN_DIR))
        if status:
            raise SystemExit(status)
