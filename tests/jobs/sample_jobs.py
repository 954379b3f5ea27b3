"""Job functions used by the tests (loaded in cluster processes through JOBS_EXTRA_MODULES)."""

from __future__ import annotations

import enum
import os
import time
from dataclasses import dataclass
from typing import Literal, Optional, TypedDict

from jobs.context import JobContext
from jobs.registry import job


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass
class Point:
    x: int
    y: int = 0


class Options(TypedDict):
    name: str
    size: int


@job(name="tests.kinds")
def kinds(
    n: int,
    ratio: float,
    label: str,
    flag: bool,
    items: list[int],
    mapping: dict[str, float],
    maybe: Optional[int],  # noqa: UP045 - the test covers the Optional spelling
    mode: Literal["fast", "slow"],
    colour: Colour,
    point: Point,
    options: Options,
    nickname: str | None = None,
) -> dict:
    return {
        "n": n,
        "ratio": ratio,
        "colour": colour.value,
        "point": [point.x, point.y],
        "options": options,
        "maybe": maybe,
        "mode": mode,
        "nickname": nickname,
        "sum": sum(items),
        "flag": flag,
        "mapping": mapping,
        "label": label,
    }


@job(name="tests.record", max_attempts=1)
def record(path: str) -> str:
    """Append this process's pid to a file: duplicate executions show up as extra lines."""
    with open(path, "a") as handle:
        handle.write(f"{os.getpid()}\n")
    return "ok"


@job(name="tests.sleep", timeout=120, max_attempts=1)
def sleep(ctx: JobContext, seconds: float, steps: int = 10) -> str:
    for step in range(steps):
        ctx.report(100 * step / steps, f"step {step}", force=True)
        time.sleep(seconds / steps)
    return "slept"


@job(name="tests.sleep_retry", timeout=120, max_attempts=2, backoff=0)
def sleep_retry(ctx: JobContext, seconds: float, marker: str) -> str:
    """Sleeps the first time it runs (long enough to be killed or cut off), leaving `marker`;
    returns at once when it runs again."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        for step in range(100):
            ctx.report(step, f"step {step}", force=True)
            time.sleep(seconds / 100)
    return f"attempt {ctx.attempt}"


@job(name="tests.timeout", timeout=1)
def too_slow() -> str:
    time.sleep(30)
    return "never"


@job(name="tests.fail", max_attempts=1)
def fail(message: str) -> None:
    raise RuntimeError(message)


@job(name="tests.flaky", max_attempts=3, backoff=0)
def flaky(ctx: JobContext, succeed_on: int) -> int:
    if ctx.attempt < succeed_on:
        raise RuntimeError(f"attempt {ctx.attempt} fails")
    return ctx.attempt


@job(name="tests.backoff", max_attempts=2, backoff=60)
def backoff(ctx: JobContext) -> int:
    raise RuntimeError("always")


@job(name="tests.unserialisable")
def unserialisable() -> object:
    return object()


@job(name="tests.staff_only", protected=True, roles=("master",))
def staff_only() -> str:
    return "ok"


@job(name="tests.export_until", queue="exports", timeout=120)
def export_until(ctx: JobContext, marker: str) -> str:
    """A long job on the `exports` queue: runs until `marker` exists."""
    while not os.path.exists(marker):
        ctx.report(50, "waiting for the marker", force=True)
        time.sleep(0.1)
    return "exported"


@job(name="tests.exclusive", max_running=1, timeout=60)
def exclusive(path: str, seconds: float = 0.3) -> str:
    """Writes `start`/`end` lines around a pause: with `max_running=1` they never interleave."""
    with open(path, "a") as handle:
        handle.write(f"start {os.getpid()}\n")
    time.sleep(seconds)
    with open(path, "a") as handle:
        handle.write(f"end {os.getpid()}\n")
    return "ok"
