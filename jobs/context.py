"""What a running job function receives: its owner and a progress reporter that can stop it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from coordinator.models import User


class JobCancelled(Exception):
    """Raised inside a job function at its next progress report after a cancel request."""


@dataclass
class JobContext:
    job_id: int
    job_type: str
    user_id: int | None
    worker: str
    attempt: int = 1
    # Stores a report and answers whether a stop was requested: `jobs.services.job_report_progress`,
    # handed in by the service that runs the job (the context is below the services, not beside them).
    record_progress: Callable[..., bool] | None = field(default=None, repr=False)
    _last_report: float = field(default=0.0, repr=False)

    @property
    def user(self) -> User | None:
        from coordinator.models import User

        if self.user_id is None:
            return None
        return User.objects.filter(pk=self.user_id).first()

    def report(self, percent: float, message: str = "", *, force: bool = False, **state: Any) -> None:
        """Record progress (0-100) and a message; raises `JobCancelled` if a stop was requested.

        Reports closer together than 0.2 s are skipped unless `force`, so a tight loop can report
        on every row without flooding the database.
        """
        now = time.monotonic()
        if not force and now - self._last_report < 0.2 and percent < 100:
            return
        self._last_report = now
        if self.record_progress is not None and self.record_progress(
            job_id=self.job_id, worker=self.worker, percent=percent, message=message, extra_state=state
        ):
            raise JobCancelled("Cancelled at the caller's request.")
