"""django-q2 entry points of the pool: take ids, call services."""

from __future__ import annotations

from pool.rollouts import rollouts_advance


def rollouts_step() -> dict[str, int]:
    """Release, time out, retry, abort and complete staged rollouts (every minute, per cluster)."""
    return rollouts_advance()
