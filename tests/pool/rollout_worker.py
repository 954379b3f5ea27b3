"""A django-q2 cluster stand-in for the concurrency test: steps one rollout at injected minutes.

Usage: python rollout_worker.py TASK_ID START_AT MINUTES  (START_AT: a Unix time at which all
workers begin together). Prints JSON: [[minute, released], ...].
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime, timedelta

import django

django.setup()

from pool.rollouts import rollout_step  # noqa: E402

T0 = datetime(2026, 12, 10, 2, 0, tzinfo=UTC)


def main() -> None:
    task_id, start_at, minutes = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    released = []
    for minute in range(minutes):
        # Line up with the other workers so that their steps of one minute really overlap.
        while time.time() < start_at + minute:
            time.sleep(0.01)
        now = T0 + timedelta(seconds=61 * minute)
        for _ in range(3):  # several tries within the same minute, as overlapping clusters would
            step = rollout_step(task_id=task_id, now=now)
            released.append([minute, step.released if step else 0])
    print(json.dumps(released))


if __name__ == "__main__":
    main()
