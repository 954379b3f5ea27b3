"""How the admin shows times, durations and long identifiers in its lists, the same on every page.

Times read as "3 min ago" (or "in 2 h") with the exact UTC time on hover, kept current on an open
page by progress/ages.js; a duration of running work counts up there too. Long identifiers are
shortened with the full value on hover.
"""

from __future__ import annotations

from datetime import UTC, datetime

from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe


def human_seconds(seconds: float) -> str:
    """`42 s`, `7 min`, `3 h 5 min`, `2 d 4 h` (ages.js writes the same)."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min"
    if whole < 86400:
        return f"{whole // 3600} h {whole % 3600 // 60} min"
    return f"{whole // 86400} d {whole % 86400 // 3600} h"


def relative_time(value: datetime | None) -> SafeString:
    """A moment as "3 min ago" or "in 2 h", exact on hover; "-" when there is none."""
    if value is None:
        return mark_safe("-")
    delta = (value - timezone.now()).total_seconds()
    text = f"in {human_seconds(delta)}" if delta > 0 else f"{human_seconds(-delta)} ago"
    return format_html(
        '<time datetime="{}" title="{}" data-relative-time="{}">{}</time>',
        value.isoformat(),
        value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        value.timestamp(),
        text,
    )


def duration(started: datetime | None, ended: datetime | None) -> SafeString:
    """How long work took, or (still running) how long it has been running, counting up."""
    if started is None:
        return mark_safe("-")
    if ended is not None:
        return format_html("{}", human_seconds((ended - started).total_seconds()))
    return format_html(
        '<span class="running-age" data-progress-since="{}">{}</span>',
        started.timestamp(),
        human_seconds((timezone.now() - started).total_seconds()),
    )


def shortened(value: str | None, keep: int = 14) -> SafeString:
    """A long identifier cut to its first `keep` characters, the whole of it on hover."""
    if not value:
        return mark_safe("-")
    if len(value) <= keep + 1:
        return format_html("{}", value)
    return format_html('<span class="short-id" title="{}">{}…</span>', value, value[:keep])
