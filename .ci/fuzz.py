"""Fuzz the live server with schemathesis against its own OpenAPI schema, as every kind of caller.

Starts `manage.py serve` on a fresh embedded database (or on DATABASE_URL when set), creates one
user per role (and a validated device when the pool app provides `createdevice`), then runs
schemathesis once anonymously and once per identity. Fails on any 5xx and on any response whose
status, content type or body the schema does not describe. Then sends the fixed corpus of hostile
payloads (`.ci/hostile.py`) to every operation as every identity, and fails on any 5xx there and on
any traceback in the server's log.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
PASSWORD = "fuzz-" + secrets.token_urlsafe(12)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def manage(env: dict[str, str], *args: str) -> str:
    out = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
    return out.stdout


def wait_healthy(base: str, proc: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("the server exited before becoming healthy")
        try:
            if requests.get(f"{base}/healthz", timeout=3).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise SystemExit("the server did not become healthy")


def device_token(env: dict[str, str], base: str) -> str | None:
    """A validated device's token, when the pool app is there to make one."""
    try:
        out = manage(env, "createdevice", "fuzz-device", "--kind", "fuzzer")
    except SystemExit:
        return None
    device_id = re.search(r"id\D*(\d+)", out, re.IGNORECASE)
    secret = re.search(r"secret\W*([A-Za-z0-9_\-]{16,})", out, re.IGNORECASE)
    if not device_id or not secret:
        print(f"[fuzz] could not read createdevice output, skipping the device identity:\n{out}")
        return None
    response = requests.post(
        f"{base}/pool/token", json={"device_id": int(device_id.group(1)), "secret": secret.group(1)}, timeout=10
    )
    if response.status_code != 200:
        print(f"[fuzz] device token refused ({response.status_code}): {response.text[:300]}")
        return None
    return str(response.json()["token"])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-examples", type=int, default=int(os.environ.get("FUZZ_MAX_EXAMPLES", "12")))
    parser.add_argument(
        "--max-time", type=int, default=int(os.environ.get("FUZZ_MAX_TIME", "40")), help="seconds per identity"
    )
    parser.add_argument("--include-path-regex", default=None)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="coordinator-fuzz-"))
    env = dict(os.environ)
    env.update(
        {
            "COORDINATOR_VAR_DIR": str(workdir),
            "DJANGO_DEBUG": "0",
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
            "PYTHONUNBUFFERED": "1",
            "Q_WORKERS": "1",
            "POOL_JOURNAL_DIR": str(workdir / "journal"),
            # The fuzzer's identities sign in far more often than a client would: inputs are its subject.
            "CREDENTIAL_RATE_PER_ADDRESS": "100000/min",
            "CREDENTIAL_RATE_PER_ACCOUNT": "100000/min",
            "ANONYMOUS_JOB_RATE": "100000/min",
        }
    )
    if "DATABASE_URL" not in os.environ:
        env["DATABASE_URL"] = f"sqlite:///{workdir / 'fuzz.sqlite3'}"
    manage(env, "migrate", "-v0")
    for role in ("admin", "master", "user"):
        manage(env, "createuser", f"{role}@fuzz.example", "--role", role, "--password", PASSWORD)

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(workdir / "serve.log", "wb")
    server = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--port", str(port), "--workers", "2"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    failures: list[str] = []
    try:
        wait_healthy(base, server)
        identities: list[tuple[str, list[str]]] = [("anonymous", [])]
        for role in ("admin", "master", "user"):
            token = requests.post(
                f"{base}/auth/token/", json={"email": f"{role}@fuzz.example", "password": PASSWORD}, timeout=10
            ).json()["access"]
            identities.append((role, ["-H", f"Authorization: Bearer {token}"]))
        token = device_token(env, base)
        if token:
            identities.append(("device", ["-H", f"Authorization: Bearer {token}"]))
        # The taskfarm dialect authenticates with HTTP Basic (email + password), as its client does.
        identities.append(("farm-basic", ["-a", f"master@fuzz.example:{PASSWORD}", "--include-path-regex", "^/api/"]))

        for name, auth in identities:
            command = [
                str(BIN / "schemathesis"),
                "run",
                f"{base}/schema/",
                "--url",
                base,
                "--checks",
                CHECKS,
                "--max-examples",
                str(args.max_examples),
                "--max-time",
                str(args.max_time),
                # One worker: with two, hypothesis (inside schemathesis) parses lambda sources from two
                # threads at once, which CPython 3.11.7 can fail with "SystemError: AST constructor
                # recursion depth mismatch" (a tool crash seen in CI, not a server failure).
                "--phases",
                "examples,coverage,fuzzing",
                "--workers",
                "1",
                "--seed",
                "20261123",
                "--suppress-health-check",
                "all",
                "--request-timeout",
                "20",
                "--warnings",
                "off",
                "--output-truncate",
                "true",
                *auth,
            ]
            if args.include_path_regex and "--include-path-regex" not in auth:
                command += ["--include-path-regex", args.include_path_regex]
            print(f"\n[fuzz] === {name} ===", flush=True)
            started = time.monotonic()
            result = subprocess.run(command, cwd=workdir)
            print(f"[fuzz] {name}: exit {result.returncode} in {time.monotonic() - started:.0f}s", flush=True)
            if result.returncode != 0:
                failures.append(name)

        # The fixed corpus of hostile payloads (.ci/hostile.py), as every identity.
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from hostile import hostile_pass

        print("\n[fuzz] === hostile-input corpus ===", flush=True)
        started = time.monotonic()
        hostile_identities: list[tuple[str, dict[str, str], tuple[str, str] | None]] = []
        for name, auth in identities:
            if name == "farm-basic":
                hostile_identities.append((name, {}, ("master@fuzz.example", PASSWORD)))
            else:
                header = auth[1] if auth else ""
                key, _, value = header.partition(": ")
                hostile_identities.append((name, {key: value} if header else {}, None))
        hostile = hostile_pass(base, hostile_identities)
        print(f"[fuzz] hostile-input corpus: {len(hostile)} failure(s) in {time.monotonic() - started:.0f}s")
        for line in hostile[:50]:
            print(f"[fuzz]   {line}")
        if hostile:
            failures.append("hostile-input corpus")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()
    server_log = (workdir / "serve.log").read_text(errors="replace")
    tracebacks = server_log.count("Traceback (most recent call last)")
    if tracebacks:
        print(f"[fuzz] the server logged {tracebacks} traceback(s); the last one:")
        print(server_log[server_log.rfind("Traceback (most recent call last)") - 2000 :][:6000])
        failures.append("tracebacks in the server log")
    if failures:
        print(f"[fuzz] FAILED for: {', '.join(failures)} (server log: {workdir / 'serve.log'})")
        return 1
    print("[fuzz] every identity passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
