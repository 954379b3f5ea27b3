"""The farm's every-minute lease sweep does not flood the log at INFO; its failures still show."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from coordinator.log_filters import RoutineScheduleFilter


def record(level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord("django-q", level, __file__, 1, message, None, None)


@pytest.fixture
def django_q_logger_at_info() -> Iterator[logging.Logger]:
    logger = logging.getLogger("django-q")
    previous = logger.level
    logger.setLevel(logging.INFO)
    yield logger
    logger.setLevel(previous)


def test_routine_schedule_lines_become_debug(django_q_logger_at_info: logging.Logger) -> None:
    routine = RoutineScheduleFilter(markers=["farm.services.leases_expire", "farm: return expired leases"])
    for message in (
        "Process-1 created task lima-nine from schedule [farm: return expired leases to waiting]",
        "Process-2 processing lima-nine 'farm.services.leases_expire' [farm: return expired leases]",
        "Processed 'farm.services.leases_expire' (lima-nine)",
    ):
        line = record(logging.INFO, message)
        assert routine.filter(line) is False
        assert line.levelname == "DEBUG"
    failure = record(logging.ERROR, "Failed 'farm.services.leases_expire' (lima-nine) - boom")
    assert routine.filter(failure) is True and failure.levelname == "ERROR"
    other = record(logging.INFO, "Processed 'jobs.services.job_execute' (kilo-two)")
    assert routine.filter(other) is True and other.levelname == "INFO"


def test_with_debug_logging_the_routine_lines_come_back(django_q_logger_at_info: logging.Logger) -> None:
    django_q_logger_at_info.setLevel(logging.DEBUG)
    line = record(logging.INFO, "Processed 'farm.services.leases_expire' (lima-nine)")
    assert RoutineScheduleFilter(markers=["farm.services.leases_expire"]).filter(line) is True


def test_settings_install_the_filter_on_django_q() -> None:
    filters = logging.getLogger("django-q").filters
    assert any(isinstance(f, RoutineScheduleFilter) and "farm.services.leases_expire" in f.markers for f in filters)
