"""Times, durations and identifiers as every admin list shows them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.utils import timezone

from coordinator.admin_display import duration, human_seconds, relative_time, shortened


def test_a_moment_reads_relative_with_the_exact_time_on_hover() -> None:
    moment = timezone.now() - timedelta(minutes=7, seconds=3)
    html = relative_time(moment)
    assert ">7 min ago</time>" in html
    assert f'title="{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"' in html
    assert f'data-relative-time="{moment.timestamp()}"' in html  # ages.js keeps it current
    assert ">in 2 h 0 min</time>" in relative_time(timezone.now() + timedelta(hours=2, seconds=5))
    assert relative_time(None) == "-"


def test_durations_count_up_while_running_and_are_fixed_once_finished() -> None:
    started = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
    assert duration(started, started + timedelta(seconds=95)) == "1 min"
    running = duration(timezone.now() - timedelta(seconds=42), None)
    assert 'data-progress-since="' in running and ">42 s</span>" in running
    assert duration(None, None) == "-"
    assert [human_seconds(s) for s in (0, 59, 3600 + 300, 2 * 86400 + 3 * 3600)] == [
        "0 s",
        "59 s",
        "1 h 5 min",
        "2 d 3 h",
    ]


def test_long_identifiers_are_shortened_with_the_whole_on_hover() -> None:
    worker = "render-node-0042.example-31337:0a1b2c3d-4e5f-6789-abcd-ef0123456789"
    assert shortened(worker, 12) == f'<span class="short-id" title="{worker}">render-node-…</span>'
    assert shortened("short") == "short" and shortened(None) == "-"
    assert "&lt;b&gt;" in shortened("<b>" * 10)  # escaped
