"""Logging filters named in `settings.LOGGING`."""

from __future__ import annotations

import logging
from collections.abc import Iterable


class RoutineScheduleFilter(logging.Filter):
    """Lowers django-q2's INFO lines about routine housekeeping schedules to DEBUG.

    A schedule that runs every minute (the farm's lease sweep) makes django-q2 log three or four
    INFO lines a minute ("created task … from schedule", "processing …", "Processed …"), which
    bury everything else in `serve`'s output. Their failures stay at ERROR; with LOG_LEVEL=DEBUG
    the lines come back.
    """

    def __init__(self, markers: Iterable[str] = ()) -> None:
        super().__init__()
        self.markers = tuple(markers)  # the schedules' function paths and names

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not any(marker in record.getMessage() for marker in self.markers):
            return True
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
