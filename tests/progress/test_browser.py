"""Real-browser tests: Debian's chromium through Playwright against `manage.py serve`."""

from __future__ import annotations

import http.server
import threading
from functools import partial

import pytest

from progress.client import stream
from tests.conftest import access_token_for
from tests.live import free_port
from tests.progress.conftest import admin_login, serve_platform, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def platform(transactional_db, socket_dir):
    with serve_platform(socket_dir) as base:
        yield base, socket_dir / "run" / "progress.sock"


def test_live_page_follows_a_socket_stream(platform, browser, admin) -> None:
    base, sock = platform
    page = browser.new_page()
    admin_login(page, base, admin)
    page.goto(f"{base}/admin/")
    page.click("a.coord-card:has-text('Live progress')")  # the card in the Live progress panel
    page.wait_for_url(f"{base}/admin/progress/progresstopic/live/")
    page.wait_for_selector("html[data-progress-live=connected]")
    with stream("first task", sock) as first:
        row = page.locator('tr[data-topic-row="stream:0"]')
        row.wait_for()  # a new stream appears without a reload
        assert row.locator(".name").inner_text() == "first task"
        with stream("second task", sock) as second:
            page.locator('tr[data-topic-row="stream:1"]').wait_for()
            first.send("copying", percent=40)
            wait_until(
                page,
                "() => document.querySelector('tr[data-topic-row=\"stream:0\"] .msg').textContent === '[40%] copying'",
            )
            assert "width: 40%" in (row.locator("[data-progress-width]").get_attribute("style") or "")
            first.close()  # ends: the first task drops below the running one
            wait_until(
                page, "() => document.querySelector('tr[data-topic-row=\"stream:0\"]')?.classList.contains('ended')"
            )
            topics = page.eval_on_selector_all("tr[data-topic-row]", "rows => rows.map(r => r.dataset.topicRow)")
            assert topics == ["stream:1", "stream:0"]
            second.send("still going")
            wait_until(
                page,
                "() => document.querySelector('tr[data-topic-row=\"stream:1\"] .msg').textContent === 'still going'",
            )


def test_live_page_reconnects_by_itself_after_a_server_restart(transactional_db, socket_dir, browser, admin) -> None:
    port = free_port()
    with serve_platform(socket_dir, port=port) as base:
        page = browser.new_page()
        admin_login(page, base, admin)
        page.goto(f"{base}/admin/progress/progresstopic/live/")
        page.wait_for_selector("html[data-progress-live=connected]")
        page.evaluate("window.notReloaded = true")
    page.wait_for_selector("html[data-progress-live=closed]")  # the server is gone
    with serve_platform(socket_dir, port=port):  # back on the same address
        page.wait_for_selector("html[data-progress-live=connected]", timeout=60000)
        with stream("after the restart", socket_dir / "run" / "progress.sock"):
            page.locator('tr[data-topic-row="stream:0"] .name:text("after the restart")').wait_for()
        assert page.evaluate("window.notReloaded") is True


SEED_PAGE = """<!doctype html><meta charset="utf-8"><title>tasks</title><div id="cards"></div><script>
// the seed's front-end logic (src/js/update.js): cards by uid, msg replaces the body, end marks it
const source = new EventSource(%(url)s);
const cards = document.getElementById("cards");
function each(e, fn) { const data = JSON.parse(e.data); for (const uid in data) fn(uid, data[uid]); }
source.addEventListener("new", e => each(e, (uid, name) => {
  const card = document.createElement("div"); card.id = "card-" + uid; card.className = "card";
  card.innerHTML = "<h3></h3><p></p>"; card.querySelector("h3").textContent = name; cards.prepend(card);
}));
source.addEventListener("msg", e => each(e, (uid, text) => {
  const card = document.getElementById("card-" + uid); if (card) card.querySelector("p").textContent = text;
}));
source.addEventListener("end", e => each(e, uid => {
  const card = document.getElementById("card-" + uid); if (card) { card.classList.add("ended"); cards.prepend(card); }
}));
source.onerror = () => { document.body.dataset.error = "1"; source.close(); };
source.onopen = () => { document.body.dataset.open = "1"; };
</script>"""


def test_event_source_page_on_another_origin_receives_new_msg_end(
    transactional_db, socket_dir, browser, admin, tmp_path
) -> None:
    page_port = free_port()
    origin = f"http://127.0.0.1:{page_port}"
    with serve_platform(socket_dir, CORS_ALLOWED_ORIGINS=origin) as base:
        sock = socket_dir / "run" / "progress.sock"
        url = f"{base}/progress/events?token={access_token_for(admin)}"
        (tmp_path / "index.html").write_text(SEED_PAGE % {"url": repr(url)})
        handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", page_port), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            with stream("already running", sock) as early:
                early.send("started before the page")
                page = browser.new_page()
                page.goto(f"{origin}/index.html")
                # the snapshot: a page joining late still learns the running task and its message
                page.wait_for_selector("#card-0 p:text('started before the page')")
                with stream("watched task", sock) as watched:
                    page.wait_for_selector("#card-1 h3:text('watched task')")
                    watched.send("step 2 of 3")
                    page.wait_for_selector("#card-1 p:text('step 2 of 3')")
                page.wait_for_selector("#card-1.ended")
                assert page.locator("#card-1 p").inner_text() == "step 2 of 3"
                assert page.evaluate("document.body.dataset.error") is None
        finally:
            server.shutdown()


# A worker the test steps through its tasks. Farm coalesces a run's `msg` events into one per
# throttle window and server process, and sends the last change of a window when it closes, so
# the page reaches each state the test waits for without the worker pacing itself.
FARM_WORKER = """
import sys
from taskfarm_worker import TaskFarmWorker
base, email, password, uuid = sys.argv[1:5]
worker = TaskFarmWorker(email, password, uuid, url_base=base)
for task in worker.tasks:
    worker.update(50)
    print("half", task, flush=True)
    sys.stdin.readline()
    worker.update(100)
    worker.done()
    print("done", task, flush=True)
"""


def _field(page, selector: str, text: str) -> None:
    wait_until(page, "([s, t]) => document.querySelector(s)?.textContent.trim() === t", [selector, text])


def test_farm_run_page_moves_while_a_taskfarm_worker_works(platform, browser, admin) -> None:
    import subprocess
    import sys

    from farm.models import Run
    from farm.services import run_create
    from tests.factories import DEFAULT_PASSWORD
    from tests.live import ROOT

    base, _ = platform
    run = run_create(owner=admin, num_tasks=2)
    page = browser.new_page()
    admin_login(page, base, admin)
    page.goto(f"{base}/admin/farm/run/{Run.objects.get().pk}/change/")
    page.wait_for_selector("html[data-progress-live=connected]")
    page.evaluate("window.notReloaded = true")
    widget = f"#farm-run-progress-{run.uuid}"
    bar = f"{widget} [data-progress-width=percentDone]"
    assert page.eval_on_selector(bar, "e => e.style.width") in ("0%", "0.00%")
    worker = subprocess.Popen(
        [sys.executable, "-c", FARM_WORKER, f"{base}/api/", admin.email, DEFAULT_PASSWORD, run.uuid],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stdout.readline().split() == ["half", "0"]
        _field(page, f"{widget} [data-progress-field=numComputing]", "1")
        wait_until(page, "s => document.querySelector(s).style.width === '25%'", bar)
        worker.stdin.write("\n")
        worker.stdin.flush()
        assert worker.stdout.readline().split() == ["done", "0"]
        _field(page, f"{widget} [data-progress-field=numDone]", "1")
        assert worker.stdout.readline().split() == ["half", "1"]
        worker.stdin.write("\n")
        worker.stdin.flush()
        assert worker.stdout.readline().split() == ["done", "1"]
        _field(page, f"{widget} [data-progress-field=numDone]", "2")
        wait_until(page, "s => document.querySelector(s).style.width === '100%'", bar)
        assert page.evaluate("window.notReloaded") is True
    finally:
        worker.kill()
        worker.wait()


def test_job_page_moves_while_a_django_q2_worker_runs_it(transactional_db, socket_dir, browser, admin) -> None:
    import tests.jobs.sample_jobs  # noqa: F401 - registers `tests.sleep` in this process
    from jobs.models import Job
    from jobs.services import job_create

    with serve_platform(socket_dir, qcluster=True, JOBS_EXTRA_MODULES="tests.jobs.sample_jobs") as base:
        page = browser.new_page()
        admin_login(page, base, admin)
        job = job_create(type="tests.sleep", data={"seconds": 8, "steps": 8}, user=admin)
        page.goto(f"{base}/admin/jobs/job/{job.pk}/change/")
        page.wait_for_selector("html[data-progress-live=connected]")
        page.evaluate("window.notReloaded = true")
        widget = f"[data-progress-topic='job:{job.pk}']"
        # the worker reports step by step: the bar and the message move on the open page ...
        wait_until(page, "s => Number(document.querySelector(s + ' progress').value) >= 25", widget, timeout=60000)
        assert page.inner_text(f"{widget} [data-progress-field=label]") == "started"
        assert page.inner_text(f"{widget} [data-progress-field=message]").startswith("step ")
        # ... up to the end
        wait_until(
            page,
            "s => document.querySelector(s + ' [data-progress-field=label]').textContent === 'success'",
            widget,
            timeout=60000,
        )
        assert Job.objects.get(pk=job.pk).status == "success"
        assert page.evaluate("window.notReloaded") is True


def test_api_docs_render_offline_under_the_content_security_policy(platform, browser) -> None:
    """Swagger UI and Redoc render from the project's own files; no script breaks the CSP, and the
    browser fetches nothing from elsewhere."""
    base, _ = platform
    page = browser.new_page()
    violations: list[str] = []
    page.on(
        "console",
        lambda message: violations.append(message.text) if "Content Security Policy" in message.text else None,
    )
    outside: list[str] = []
    page.on(
        "request",
        lambda request: None if request.url.startswith((base, f"blob:{base}")) else outside.append(request.url),
    )
    page.goto(f"{base}/docs/")
    page.wait_for_selector(".swagger-ui .info .title")
    page.wait_for_selector("#operations-tag-farm")  # the schema loaded and rendered
    page.goto(f"{base}/redoc/")
    page.wait_for_selector("text=Coordinator API")
    # Redoc's footer links its maker's logo from a CDN: the policy blocks that image, nothing else.
    assert all("img-src" in violation and "redoc" in violation for violation in violations), violations
    # Apart from that blocked logo, every request stays on this origin.
    assert [url for url in outside if "redoc" not in url] == []


# --- live state never lies: each case on a page left open ---------------------------------------


@pytest.fixture
def live_admin(transactional_db, socket_dir, browser, admin):
    """serve (a device is online for 4 s after a heartbeat) and a signed-in admin page."""
    import tests.jobs.sample_jobs  # noqa: F401 - registers `tests.sleep` in this process

    with serve_platform(socket_dir, POOL_ONLINE_SECONDS="4", JOBS_EXTRA_MODULES="tests.jobs.sample_jobs") as base:
        page = browser.new_page()
        admin_login(page, base, admin)
        yield base, page


def _open_live(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("html[data-progress-live=connected]")
    page.evaluate("window.notReloaded = true")


def _replayed(page, event_id: int) -> None:
    """Wait until the page has received (and judged) the event with this id."""
    wait_until(page, "id => window.progressLive.lastEventId() >= id", event_id)


def test_a_device_goes_offline_on_an_open_page(live_admin, settings) -> None:
    from pool.services import device_create, heartbeat_record

    base, page = live_admin
    settings.POOL_ONLINE_SECONDS = 4  # the heartbeat recorded here promises what serve was told
    device, _ = device_create(name="sensor-7", validated=True)
    _open_live(page, f"{base}/admin/pool/device/")
    badge = f"[data-progress-topic='pooldevice:{device.pk}']"
    assert page.inner_text(f"{badge} [data-progress-field=badge]") == "offline"
    heartbeat_record(device=device)  # a heartbeat after the page was rendered: it turns online ...
    _field(page, f"{badge} [data-progress-field=badge]", "online")
    assert page.eval_on_selector(badge, "e => e.hasAttribute('data-live-expired')") is False
    # ... and, with no heartbeat after it, offline again by itself once the 4 s have passed
    _field(page, f"{badge} [data-progress-field=badge]", "offline")
    assert page.eval_on_selector(badge, "e => e.hasAttribute('data-live-expired')") is True
    assert page.evaluate("window.notReloaded") is True


def test_a_replay_never_overrides_a_newer_server_state(live_admin) -> None:
    from django.utils import timezone

    from pool.models import Device
    from pool.services import device_create, heartbeat_record
    from progress.models import ProgressEvent

    base, page = live_admin
    device, _ = device_create(name="sensor-8", validated=True)
    heartbeat_record(device=device)  # its event says "online" (for the next 120 s of this process)
    beat = ProgressEvent.objects.filter(topic=f"pooldevice:{device.pk}").latest("id")
    # The server's state moves on without an event: the heartbeat is 20 minutes old now.
    Device.objects.filter(pk=device.pk).update(last_heartbeat_at=timezone.now() - timezone.timedelta(minutes=20))
    _open_live(page, f"{base}/admin/pool/device/")
    _replayed(page, beat.id)  # the topic's last event, replayed on subscribe, has arrived
    badge = f"[data-progress-topic='pooldevice:{device.pk}']"
    assert page.inner_text(f"{badge} [data-progress-field=badge]") == "offline"


def test_a_failed_jobs_bar_stays_where_it_stopped(live_admin, admin) -> None:
    from jobs.models import Job
    from jobs.services import job_claim, job_create, job_finish, job_report_progress

    base, page = live_admin
    job = job_create(type="tests.sleep", data={"seconds": 1}, user=admin)
    job_claim(job_id=job.pk, worker="w:1")
    attempt_began = Job.objects.get(pk=job.pk)  # what the worker read when it started
    job_report_progress(job_id=job.pk, worker="w:1", percent=60, message="more than half")
    _open_live(page, f"{base}/admin/jobs/job/")
    row = f"[data-progress-topic='job:{job.pk}']"
    assert page.eval_on_selector(f"{row} progress", "e => e.value") == 60
    job_finish(job_id=job.pk, worker="w:1", ok=False, error="RuntimeError: disk", job=attempt_began)
    _field(page, f"{row} [data-progress-field=label]", "failure")
    assert page.eval_on_selector(f"{row} progress", "e => e.value") == 60
    assert page.eval_on_selector(f"{row} .job-status", "e => e.dataset.state") == "failure"
    # a fresh page (the failure's event replayed on subscribe) shows the same
    from progress.models import ProgressEvent

    end = ProgressEvent.objects.filter(topic=job.topic).latest("id")
    _open_live(page, f"{base}/admin/jobs/job/{job.pk}/change/")
    _replayed(page, end.id)
    assert page.eval_on_selector("#job-live progress", "e => e.value") == 60
    assert page.inner_text("#job-live [data-progress-field=label]") == "failure"


def test_a_cancel_is_seen_live_and_the_page_shows_one_state(live_admin, admin) -> None:
    from jobs.services import job_cancel, job_claim, job_create, job_finish, job_report_progress

    base, page = live_admin
    job = job_create(type="tests.sleep", data={"seconds": 1}, user=admin)
    job_claim(job_id=job.pk, worker="w:1")
    job_report_progress(job_id=job.pk, worker="w:1", percent=30, message="working")
    _open_live(page, f"{base}/admin/jobs/job/{job.pk}/change/")
    assert page.inner_text("#job-live [data-progress-field=label]") == "started"
    assert page.is_enabled("#job-live button[name=cancel]") and not page.is_enabled("#job-live button[name=retry]")
    job_cancel(job=job)  # another operator, elsewhere
    assert job_report_progress(job_id=job.pk, worker="w:1", percent=40, message="working") is True
    job_finish(job_id=job.pk, worker="w:1", ok=False, error="Cancelled.", retryable=False)
    _field(page, "#job-live [data-progress-field=label]", "cancelled")
    wait_until(page, "() => document.querySelector('#job-live button[name=cancel]').disabled")
    assert page.is_enabled("#job-live button[name=retry]")
    assert "cancelled" in page.inner_text("#job-live")
    assert "failure" not in page.inner_text("#job-live").lower()
    assert "started" not in page.inner_text("#content h2").lower()
    assert page.evaluate("window.notReloaded") is True


COUNT_FRAGMENT_FETCHES = """() => {
  window.fragmentFetches = 0;
  const real = window.fetch;
  window.fetch = function (url, options) {
    if (options && options.headers && options.headers["X-Progress-Fragment"]) { window.fragmentFetches += 1; }
    return real.apply(this, arguments);
  };
}"""


def test_the_live_page_changes_rows_in_place_and_keeps_heartbeats_out(platform, browser, admin) -> None:
    from progress.services import progress_publish

    base, sock = platform
    page = browser.new_page()
    admin_login(page, base, admin)
    page.goto(f"{base}/admin/progress/progresstopic/live/")
    page.wait_for_selector("html[data-progress-live=connected]")
    page.evaluate(COUNT_FRAGMENT_FETCHES)
    with stream("busy task", sock) as busy:
        row = 'tr[data-topic-row="stream:0"]'
        page.locator(row).wait_for()  # a stream the page did not show: the list is fetched once
        fetched = page.evaluate("window.fragmentFetches")
        assert fetched >= 1
        for step in range(40):
            busy.send(f"step {step}", percent=step * 2)
        # a heartbeat between them: hidden by default, so it neither shows nor fetches anything
        progress_publish(topic="pooldevice:3", kind="msg", text="3 heartbeat", state={"badge": "online"})
        busy.send("last step", percent=90)
        _field(page, f"{row} .msg", "[90%] last step")
        assert "width: 90%" in (page.locator(f"{row} [data-progress-width]").get_attribute("style") or "")
        assert page.evaluate("window.fragmentFetches") == fetched  # 41 messages changed the row in place
        assert page.locator('tr[data-topic-row="pooldevice:3"]').count() == 0
    # its end moves it below the running ones: one more fetch, and it looks ended
    wait_until(page, "s => document.querySelector(s)?.classList.contains('ended')", row)
    assert page.evaluate("window.fragmentFetches") == fetched + 1
