"""The staged-rollout policy a task carries in `meta.rollout`, validated with each bad field named."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from coordinator.errors import ValidationFailedError
from pool.wire import parse_ts

MAX_RATE = 1_000_000  # deliveries a minute; past this a rollout is a broadcast
RETRY_ON = ("failed", "timed_out")


@dataclass(frozen=True)
class Ramp:
    factor: float
    every_succeeded: int
    max_per_minute: int


@dataclass(frozen=True)
class Abort:
    failed_percent: float
    min_finished: int


@dataclass(frozen=True)
class Retries:
    max: int
    on: tuple[str, ...]


@dataclass(frozen=True)
class RolloutPolicy:
    """A validated `meta.rollout`."""

    per_minute: int
    ramp: Ramp | None = None
    abort: Abort | None = None
    in_progress_timeout: timedelta | None = None
    retries: Retries | None = None
    window_start: datetime | None = None
    window_end: datetime | None = None

    def rate(self, succeeded: int) -> int:
        """Deliveries a minute after `succeeded` successes: multiplied by the ramp's factor for every
        `every_succeeded` of them, up to its maximum."""
        if self.ramp is None:
            return self.per_minute
        steps = succeeded // self.ramp.every_succeeded
        if steps == 0:
            return self.per_minute
        # Logarithms keep a huge number of steps from overflowing before the cap applies.
        if math.log(self.ramp.max_per_minute / self.per_minute) <= steps * math.log(self.ramp.factor):
            return self.ramp.max_per_minute
        return min(self.ramp.max_per_minute, int(self.per_minute * self.ramp.factor**steps))

    def in_window(self, now: datetime) -> bool:
        return (self.window_start is None or now >= self.window_start) and (
            self.window_end is None or now < self.window_end
        )


class _Fields:
    """Collects `meta.rollout.<path>` errors so that a 400 names every bad field at once."""

    def __init__(self) -> None:
        self.errors: dict[str, list[str]] = {}

    def bad(self, path: str, message: str) -> None:
        self.errors.setdefault(f"meta.rollout{path}", []).append(message)

    def obj(self, raw: Any, path: str, allowed: set[str]) -> dict[str, Any]:
        if not isinstance(raw, dict):
            self.bad(path, "Must be an object.")
            return {}
        for key in sorted(set(raw) - allowed):
            self.bad(f"{path}.{key}", "Unknown key; allowed: " + ", ".join(sorted(allowed)) + ".")
        return raw

    def integer(self, raw: dict[str, Any], key: str, path: str, low: int, high: int, default: int | None = None) -> int:
        value = raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.bad(f"{path}.{key}", f"Must be an integer from {low} to {high}.")
            return low
        return value

    def number(self, raw: dict[str, Any], key: str, path: str, low: float, high: float, above: bool = False) -> float:
        value = raw.get(key)
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or not (low < value <= high if above else low <= value <= high):  # type: ignore[operator]
            self.bad(
                f"{path}.{key}",
                f"Must be a number {'above' if above else 'from'} {low} {'up ' if above else ''}to {high}.",
            )
            return high
        return float(value)  # type: ignore[arg-type]

    def time(self, raw: dict[str, Any], key: str, path: str) -> datetime | None:
        value = raw.get(key)
        if value is None:
            return None
        try:
            if not isinstance(value, str) or len(value) > 40:
                raise ValueError
            return parse_ts(value)
        except ValueError:
            self.bad(f"{path}.{key}", "Must be an ISO time like 2026-12-10T02:00:00Z.")
            return None


def rollout_policy_parse(raw: Any) -> RolloutPolicy:
    """Validate `meta.rollout`; a bad policy is a 400 `validation_error` naming each bad field."""
    f = _Fields()
    top = f.obj(raw, "", {"per_minute", "ramp", "abort", "in_progress_timeout_seconds", "retries", "window"})
    if not top and isinstance(raw, dict):
        f.bad(".per_minute", "Required: deliveries released a minute.")
    per_minute = f.integer(top, "per_minute", "", 1, MAX_RATE) if top else 1
    ramp = abort = retries = None
    timeout = start = end = None
    if "ramp" in top:
        r = f.obj(top["ramp"], ".ramp", {"factor", "every_succeeded", "max_per_minute"})
        ramp = Ramp(
            factor=f.number(r, "factor", ".ramp", 1, 100, above=True),
            every_succeeded=f.integer(r, "every_succeeded", ".ramp", 1, 10_000_000),
            max_per_minute=f.integer(r, "max_per_minute", ".ramp", per_minute, MAX_RATE),
        )
    if "abort" in top:
        a = f.obj(top["abort"], ".abort", {"failed_percent", "min_finished"})
        abort = Abort(
            failed_percent=f.number(a, "failed_percent", ".abort", 0, 100, above=True),
            min_finished=f.integer(a, "min_finished", ".abort", 1, 10_000_000, default=1),
        )
    if "in_progress_timeout_seconds" in top:
        timeout = timedelta(seconds=f.integer(top, "in_progress_timeout_seconds", "", 1, 30 * 86400))
    if "retries" in top:
        r = f.obj(top["retries"], ".retries", {"max", "on"})
        on = r.get("on", list(RETRY_ON))
        if not isinstance(on, list) or not on or any(item not in RETRY_ON for item in on):
            f.bad(".retries.on", "Must be a non-empty list of: failed, timed_out.")
            on = []
        retries = Retries(max=f.integer(r, "max", ".retries", 0, 10), on=tuple(sorted(set(on))))
    if "window" in top:
        w = f.obj(top["window"], ".window", {"start", "end"})
        start, end = f.time(w, "start", ".window"), f.time(w, "end", ".window")
        if start is not None and end is not None and end <= start:
            f.bad(".window.end", "The window must end after it starts.")
    if f.errors:
        first = next(iter(f.errors))
        raise ValidationFailedError(f"{first}: {f.errors[first][0]}", extra={"fields": f.errors})
    return RolloutPolicy(
        per_minute=per_minute,
        ramp=ramp,
        abort=abort,
        in_progress_timeout=timeout,
        retries=retries,
        window_start=start,
        window_end=end,
    )
