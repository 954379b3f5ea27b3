"""A batch worker for the `max_computing` race: claims up to 3 tasks at a time, reads how many tasks
of the run compute right after each claim, completes what it got, until the run is done.

Prints one line per claim that got tasks: `<numbers claimed> <run's numComputing just after>`.
Usage: `python -m tests.farm.limit_worker URL_BASE EMAIL PASSWORD RUN_UUID WORKER_UUID`
"""

from __future__ import annotations

import os
import sys

import requests


def main() -> None:
    base, email, password, run, me = sys.argv[1:6]
    session = requests.Session()
    session.auth = (email, password)
    session.auth = (session.get(f"{base}token").json()["token"], "")
    session.post(f"{base}worker", json={"uuid": me, "hostname": "limit", "pid": os.getpid()}).raise_for_status()
    while True:
        claimed = session.post(f"{base}runs/{run}/tasks/claim", json={"worker_uuid": me, "count": 3})
        claimed.raise_for_status()
        numbers = [task["task"] for task in claimed.json()["tasks"]]
        info = session.get(f"{base}runs/{run}").json()
        if not numbers:
            if info["numDone"] == info["numTasks"]:
                return
            continue  # the others hold every slot: ask again
        print(" ".join(map(str, numbers)), info["numComputing"], flush=True)
        done = session.post(f"{base}runs/{run}/tasks/done", json={"worker_uuid": me, "tasks": numbers})
        done.raise_for_status()


if __name__ == "__main__":
    main()
