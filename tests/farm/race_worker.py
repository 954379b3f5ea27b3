"""A real `taskfarm-worker` process for the race test: claims, updates to 100, marks done.

Prints one line per task it was handed: `<task number>`. Usage:
`python -m tests.farm.race_worker URL_BASE EMAIL PASSWORD RUN_UUID`
"""

from __future__ import annotations

import sys

from taskfarm_worker import TaskFarmWorker


def main() -> None:
    url_base, email, password, run_uuid = sys.argv[1:5]
    worker = TaskFarmWorker(email, password, run_uuid, url_base=url_base)
    for task in worker.tasks:
        print(task, flush=True)
        worker.update(50)
        worker.update(100)
        worker.done()


if __name__ == "__main__":
    main()
