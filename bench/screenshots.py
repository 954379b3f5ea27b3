"""Screenshots of the admin's main pages (docs/img/), from this checkout or another one.

Seeds a fresh embedded platform (SQLite in a temporary var directory) with the same small fleet,
run, jobs and streams through the services, starts `manage.py serve` from the checkout, signs in
with Debian's chromium and saves each page at 1440 x 900 as docs/img/<prefix>-<page>.png. Run it
from a checkout of an older commit with `--checkout` to get the "before" pictures.

    .venv/bin/python -m bench.screenshots --prefix after
    git worktree add /tmp/before <commit> && .venv/bin/python -m bench.screenshots --checkout /tmp/before --prefix before
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "docs" / "img"
CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
EMAIL, PASSWORD = "ops@example.com", "a-long-secret-for-pictures"

SEED = f"""
from datetime import timedelta
from django.utils import timezone
from coordinator.models import Role, User
from farm import services as farm
from jobs.models import Job
from jobs.services import job_create
from pool.models import Device
from pool.services import device_create, heartbeat_record, response_create, task_create
from progress.services import progress_publish

admin = User.objects.create_user({EMAIL!r}, {PASSWORD!r}, role=Role.ADMIN)
devices = [device_create(name=f"sensor-{{i:03d}}", kind=("thermometer", "router", "pc")[i % 3], validated=True)[0]
           for i in range(12)]
for device in devices[:7]:
    heartbeat_record(device=device)
Device.objects.filter(pk__in=[d.pk for d in devices[7:10]]).update(last_heartbeat_at=timezone.now() - timedelta(minutes=20))
task = task_create(user=admin, to="device:*", title="update the firmware to 4.2.1 and reboot")
for device in devices[:5]:
    response_create(device=device, parent_id=task.msg_id, status="done", body="ok")
response_create(device=devices[5], parent_id=task.msg_id, status="failed", body="no space left")
response_create(device=devices[6], parent_id=task.msg_id, status="progress", body="half way")
run = farm.run_create(owner=admin, num_tasks=100_000, name="nightly render of the catalogue")
workers = [farm.worker_register(owner=admin, uuid=f"{{i:02d}}" + "5f0c1d2e3a4b5c6d7e8f90a1b2c3d4e5f6", hostname=f"render-node-{{i:02d}}", pid=4000 + i)
           for i in range(4)]
for number, worker in enumerate(workers):
    held = [task.task for task in farm.tasks_claim(run=run, worker=worker, limit=3)]
    if number == 3:
        farm.tasks_fail(run=run, worker=worker, numbers=held[:1], reason="out of memory")
    else:
        farm.tasks_complete(run=run, worker=worker, numbers=held[:1])
now = timezone.now()
for i in range(14):
    job = job_create(type="noop", data={{}}, user=admin)
    status = ("success", "failure", "started", "fresh")[i % 4]
    Job.objects.filter(pk=job.pk).update(
        status=status, worker=f"render-node-01-{{4000 + i}}:0a1b2c3d-4e5f-6789-abcd-ef01234567{{i:02d}}",
        started_at=now - timedelta(minutes=30 - i), finished_at=now - timedelta(minutes=20 - i) if status in ("success", "failure") else None,
        error="OSError: [Errno 28] No space left on device" if status == "failure" else "",
        progress=100 if status == "success" else 35 + i, heartbeat_at=now if status == "started" else None,
        attempts=1, created_by=admin)
for i in range(5):
    progress_publish(topic=f"stream:{{i}}", kind="new", text=f"backup volume {{i}}", state={{"percent": 20 * i}})
progress_publish(topic="stream:2", kind="end", text="disk full")
"""

PAGES = [
    ("index", "/admin/"),
    ("devices", "/admin/pool/device/"),
    ("device-tasks", "/admin/pool/task/"),
    ("device-task", "/admin/pool/task/{task}/change/"),
    ("compose", "/admin/pool/task/add/"),
    ("runs", "/admin/farm/run/"),
    ("farm-tasks", "/admin/farm/task/"),
    ("workers", "/admin/farm/worker/"),
    ("jobs", "/admin/jobs/job/"),
    ("job", "/admin/jobs/job/{job}/change/"),
    ("live", "/admin/progress/progresstopic/live/"),
]


# `--console`: the operations dashboard (the admin index) with 24 h of minute values. The seeded
# platform above is minutes old, so its history is drawn from a pattern (daily wave plus noise),
# not measured; the current minute is recorded from the seeded data itself.
CONSOLE_SEED = """
import math, random
from datetime import timedelta
from django.utils import timezone
from coordinator.models import MetricMinute
from coordinator.services import operations_record
rng = random.Random(7)
end = timezone.now().replace(second=0, microsecond=0)
shapes = {"jobs.succeeded": (12, 8), "jobs.failed": (1, 1), "jobs.run_mean": (4, 2), "jobs.run_p95": (9, 4),
          "farm.done": (180, 120), "farm.failed": (2, 2), "farm.latency_mean": (45, 15),
          "farm.computing": (40, 25), "farm.past_lease": (1, 1),
          "pool.responses": (60, 40), "pool.heartbeats": (110, 10), "pool.online": (9, 2), "pool.open": (30, 20),
          "progress.events": (300, 200)}
rows = []
for name, (level, swing) in shapes.items():
    for minute in range(1, 24 * 60 + 1):
        at = end - timedelta(minutes=minute)
        wave = math.sin(2 * math.pi * (at.hour * 60 + at.minute) / 1440)
        rows.append(MetricMinute(series=name, minute=int(at.timestamp()), value=max(0.0, round(level + swing * wave + rng.gauss(0, swing / 4), 2))))
MetricMinute.objects.bulk_create(rows, batch_size=5000)
operations_record()
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkout", type=Path, default=ROOT, help="the source tree to run (default: this one)")
    parser.add_argument("--prefix", required=True, help="file name prefix, e.g. before or after")
    parser.add_argument(
        "--console", action="store_true", help="only the operations dashboard, whole page, with 24 h of chart values"
    )
    parser.add_argument("--port", type=int, default=None, help="the platform's port (default: a random free one)")
    args = parser.parse_args()
    checkout: Path = args.checkout.resolve()
    pages = [("dashboard", "/admin/")] if args.console else PAGES
    var = Path(tempfile.mkdtemp(prefix="shots-", dir="/tmp"))
    env = {
        **os.environ,
        "COORDINATOR_VAR_DIR": str(var),
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_DEBUG": "0",
        "DJANGO_SETTINGS_MODULE": "coordinator.settings",
        "PYTHONPATH": str(checkout),
    }
    for name in ("DATABASE_URL", "REDIS_URL"):
        env.pop(name, None)
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], cwd=checkout, env=env, check=True)
    subprocess.run([*manage, "shell", "-c", SEED], cwd=checkout, env=env, check=True)
    if args.console:
        subprocess.run([*manage, "shell", "-c", CONSOLE_SEED], cwd=checkout, env=env, check=True)
    ids = (
        subprocess.run(
            [
                *manage,
                "shell",
                "-c",
                "from pool.models import Message; from jobs.models import Job; "
                "print(Message.objects.filter(type='task').first().pk, Job.objects.filter(status='failure').first().pk)",
            ],
            cwd=checkout,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        .stdout.strip()
        .splitlines()[-1]
        .split()
    )
    port = args.port or 18000 + secrets.randbelow(2000)
    serve = subprocess.Popen(
        [*manage, "serve", "--port", str(port), "--workers", "1", "--no-qcluster"],
        cwd=checkout,
        env=env,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        from playwright.sync_api import sync_playwright

        IMAGES.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.goto(f"{base}/admin/login/")
            page.fill("#id_username", EMAIL)
            page.fill("#id_password", PASSWORD)
            page.click("input[type=submit]")
            page.wait_for_url(f"{base}/admin/")
            for name, url in pages:
                page.goto(base + url.format(task=ids[0], job=ids[1]))
                page.wait_for_timeout(1500)  # the live layer connects and applies what it replays
                target = IMAGES / f"{args.prefix}-{name}.png"
                page.screenshot(path=str(target), full_page=args.console)
                print(target.relative_to(ROOT))
            browser.close()
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        serve.wait(30)
        shutil.rmtree(var, ignore_errors=True)


if __name__ == "__main__":
    main()
