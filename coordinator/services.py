"""Writes on users, the audit trail every operator action goes through, and the operations
dashboard's minute values."""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from types import ModuleType
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.core.cache import cache
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email
from django.db import models, transaction
from django.http import HttpRequest
from django.utils import timezone
from rest_framework.throttling import BaseThrottle

from coordinator.errors import PermissionDeniedError, ValidationFailedError
from coordinator.models import AuditEntry, IdempotentAnswer, MetricMinute, Role, User
from coordinator.selectors import operations_overview, operations_overview_state, operations_parts

logger = logging.getLogger(__name__)


def _apply_role(user: User, role: str) -> None:
    """Set the role; staff status follows it: an admin is staff and superuser, and losing the
    admin role takes staff status away too (an admin may give it back explicitly)."""
    was_admin = user.pk is not None and user.role == Role.ADMIN
    user.role = role
    user.is_superuser = role == Role.ADMIN
    if role == Role.ADMIN:
        user.is_staff = True
    elif was_admin:
        user.is_staff = False


@transaction.atomic
def user_set_role(*, user: User, role: str, actor: User) -> bool:
    """Give `user` this role on behalf of `actor`; True when it changed.

    Granting or removing the admin role takes an admin, and the last active admin keeps the role,
    so that nobody below admin can raise themselves and the platform never locks itself out."""
    if role is not None and role not in Role.values:
        raise ValidationFailedError(f"Unknown role {role!r}; use one of {', '.join(Role.values)}.")
    locked = User.objects.select_for_update().get(pk=user.pk)
    if locked.role == role:
        return False
    if Role.ADMIN in (role, locked.role) and not (actor.is_active and actor.role == Role.ADMIN):
        raise PermissionDeniedError("Only an admin can grant or remove the admin role.")
    if locked.role == Role.ADMIN and not (
        User.objects.filter(role=Role.ADMIN, is_active=True).exclude(pk=locked.pk).exists()
    ):
        raise PermissionDeniedError("This is the last active admin: make another admin first.")
    before = {"role": locked.role, "is_staff": locked.is_staff}
    _apply_role(locked, role)
    locked.save(update_fields=["role", "is_staff", "is_superuser"])
    audit_record(
        action="user.role_set", target=locked, before=before, after={"role": role, "is_staff": locked.is_staff}
    )
    user.role, user.is_staff, user.is_superuser = locked.role, locked.is_staff, locked.is_superuser
    return True


@transaction.atomic
def user_deactivate(*, user: User, actor: User) -> bool:
    """Deactivate `user` (no login, no API) on behalf of `actor`; True when it changed.

    Nobody deactivates themselves, and only an admin deactivates an admin."""
    if user.pk == actor.pk:
        raise PermissionDeniedError("You cannot deactivate yourself.")
    if user.role == Role.ADMIN and actor.role != Role.ADMIN:
        raise PermissionDeniedError("Only an admin can deactivate an admin.")
    changed = User.objects.filter(pk=user.pk, is_active=True).update(is_active=False) == 1
    if changed:
        audit_record(action="user.deactivate", target=user, before={"is_active": True}, after={"is_active": False})
    return changed


@transaction.atomic
def user_create_or_update(
    *, email: str, role: str | None, password: str | None, name: str | None = None, check_password: bool = True
) -> tuple[User, bool]:
    """Create the user with this email, or update it: its role when one is given (an existing
    user's role is otherwise kept; a new user gets `user`), its password when given. Returns
    (user, created). For the command line, which is trusted as the host's operator."""
    email = email.strip().lower()
    try:
        validate_email(email)
    except DjangoValidationError as exc:
        raise ValidationFailedError(
            f"{email!r} is not a valid email address.", extra={"fields": {"email": exc.messages}}
        ) from exc
    if role is not None and role not in Role.values:
        raise ValidationFailedError(
            f"Unknown role {role!r}; use one of {', '.join(Role.values)}.", extra={"fields": {"role": [role]}}
        )
    user = User.objects.select_for_update().filter(email=email).first()
    created = user is None
    if user is None:
        user = User(email=email)
    if role is not None or created:
        _apply_role(user, role or Role.USER)
    if name is not None:
        user.name = name
    if password is not None:
        if check_password:
            try:
                validate_password(password, user)
            except DjangoValidationError as exc:
                raise ValidationFailedError(
                    "The password is too weak: " + " ".join(exc.messages), extra={"fields": {"password": exc.messages}}
                ) from exc
        user.set_password(password)
    elif created:
        raise ValidationFailedError("A new user needs a password.", extra={"fields": {"password": ["required"]}})
    user.save()
    return user, created


def idempotent_answer_store(
    *, scope: str, key: str, fingerprint: str, status: int, content: bytes, content_type: str, keep: timedelta
) -> None:
    """Remember an answer for its key's retries. Runs in the request's transaction: a concurrent
    request with the same key that committed first makes it raise IntegrityError (and roll back)."""
    IdempotentAnswer.objects.filter(created_at__lt=timezone.now() - keep).delete()
    IdempotentAnswer.objects.create(
        scope=scope, key=key, fingerprint=fingerprint, status=status, content=content, content_type=content_type
    )


# ---------------------------------------------------------------------------------------------
# The audit trail. One operator action (one state-changing request, one admin action, one
# command) writes exactly one entry, however many services it calls: the first record names the
# action; what else the same action changed goes into the entry's `details`. Services call
# `audit_record()` in their transaction; a record counts only once that transaction commits.
# Outside an operator's action (a worker running a job, a sweep) nothing is recorded: the action
# that asked for the work was.


@dataclass
class AuditScope:
    """The operator action in progress: who, from where, and the records it made so far."""

    request: HttpRequest | None = None
    actor: User | None = None
    address: str = ""
    records: list[dict[str, Any]] = field(default_factory=list)

    def who(self) -> User | None:
        if self.actor is not None:
            return self.actor
        user = getattr(self.request, "user", None) if self.request is not None else None
        return user if isinstance(user, User) and user.is_authenticated else None


_scope: contextvars.ContextVar[AuditScope | None] = contextvars.ContextVar("audit_scope", default=None)


def _target(target: models.Model | str | None) -> tuple[str, str, str]:
    if target is None:
        return "", "", ""
    if isinstance(target, str):
        return "", "", target[:200]
    return target._meta.label_lower, str(target.pk or "")[:64], str(target)[:200]


def _jsonable(value: Any) -> Any:
    import json

    from django.core.serializers.json import DjangoJSONEncoder

    return json.loads(json.dumps(value, cls=DjangoJSONEncoder, default=str))


@contextmanager
def audit_scope(
    *, request: HttpRequest | None = None, actor: User | None = None, address: str = ""
) -> Iterator[AuditScope]:
    """Group the audit records of one operator action into one entry, written when it ends.

    Nested scopes join the outer one. Middleware opens one per state-changing request; commands
    open one with `actor=None` (the host's operator) to have their records kept."""
    outer = _scope.get()
    if outer is not None:
        yield outer
        return
    if request is not None and not address:
        # The client the nearest trusted proxy saw, as the rate limits count it (TRUSTED_PROXY_COUNT):
        # behind the front door or nginx, REMOTE_ADDR is the proxy (or empty, on a UNIX socket).
        address = str(BaseThrottle().get_ident(request) or "")  # type: ignore[arg-type]
    scope = AuditScope(request=request, actor=actor, address=address)
    token = _scope.set(scope)
    try:
        yield scope
    finally:
        _scope.reset(token)
        if scope.records:
            _entry_write(scope)


def _entry_write(scope: AuditScope) -> AuditEntry:
    first, rest = scope.records[0], scope.records[1:]
    who = scope.who()
    return AuditEntry.objects.create(
        actor=who,
        actor_label=who.email if who is not None else "",
        address=scope.address[:64],
        details=rest,
        **first,
    )


def audit_record(
    *,
    action: str,
    target: models.Model | str | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    actor: User | None = None,
    request: HttpRequest | None = None,
    lead: bool = False,
) -> None:
    """Record one operator action (`"<app>.<what>"`) on `target` once the caller's writes commit.

    Within an operator's action (a request, an admin action, a command's scope) it joins that
    action's one entry; given `actor` or `request` outside one it writes an entry of its own;
    otherwise (a worker, a sweep: not an operator's action) nothing is recorded. `lead` makes this
    record the one that names the entry (the admin action that made the other changes)."""
    target_type, target_id, target_label = _target(target)
    record = {
        "action": action[:100],
        "target_type": target_type,
        "target_id": target_id,
        "target_label": target_label,
        "before": _jsonable(before or {}),
        "after": _jsonable(after or {}),
    }
    scope = _scope.get()
    if scope is None:
        if actor is None and request is None:
            return

        def write() -> None:
            with audit_scope(request=request, actor=actor) as own:
                own.records.append(record)

        transaction.on_commit(write)
        return
    if actor is not None and scope.actor is None:
        scope.actor = actor
    transaction.on_commit(lambda: scope.records.insert(0, record) if lead else scope.records.append(record))


def schedule_every_minute(*, name: str, func: str, using: str = "default") -> None:
    """Have the django-q2 cluster run `func` every minute under `name`, unless that schedule exists
    (a staff change to its timing in the admin is kept by later migrations)."""
    from django_q.models import Schedule

    Schedule.objects.using(using).get_or_create(
        name=name,
        defaults={"func": func, "schedule_type": Schedule.MINUTES, "minutes": 1, "repeats": -1},
    )


def operations_record(*, now: datetime | None = None) -> int:
    """Record every app's dashboard series for the last whole minute, prune minutes past the
    retention, and hand the values to open dashboards; returns the number of values stored.

    Each app's operations module (coordinator.selectors.operations_parts) gives its values with
    `minute(start, end)` (indexed reads of that minute); one with `broadcast(state)` (progress)
    hands them to the open dashboards."""
    now = now or timezone.now()
    end = now.replace(second=0, microsecond=0)
    start = end - timedelta(minutes=1)
    values: dict[str, float] = {}
    parts = operations_parts()
    for config, part in parts:
        try:
            values.update({name: float(v) for name, v in part.minute(start, end).items() if v is not None})
        except Exception:  # one app's failing query must not cost the others their minute
            logger.exception("Dashboard series of %s failed", config.label)
    at = int(start.timestamp())
    MetricMinute.objects.bulk_create(
        [MetricMinute(series=name, minute=at, value=v) for name, v in values.items()],
        update_conflicts=True,
        unique_fields=["series", "minute"],
        update_fields=["value"],
    )
    cutoff = end - timedelta(hours=settings.OPERATIONS_RETENTION_HOURS)
    # By series first: the unique (series, minute) index serves the range.
    MetricMinute.objects.filter(series__in=list(values), minute__lt=int(cutoff.timestamp())).delete()
    state = {"minute": at, **values, "overview": operations_overview_state(operations_overview(None, now=now))}
    _operations_broadcast(parts, state)
    return len(values)


def _operations_broadcast(parts: list[tuple[AppConfig, ModuleType]], state: dict[str, Any]) -> None:
    for _, part in parts:
        broadcast: Callable[[dict[str, Any]], None] | None = getattr(part, "broadcast", None)
        if broadcast is not None:
            transaction.on_commit(partial(broadcast, state))


OVERVIEW_CACHE_KEY = "coordinator:operations-overview"


def operations_overview_publish(*, throttled: bool = False) -> bool:
    """Hand open dashboards the current counts and needs-attention items, computed by the selector
    the admin index renders them with (coordinator.selectors.operations_overview); True if sent.

    `throttled`: at most one per OPERATIONS_LIVE_SECONDS across every process (a key in the cache
    they share), however many processes and readers ask: the cost follows the clock, not the load."""
    if throttled and not cache.add(OVERVIEW_CACHE_KEY, 1, timeout=settings.OPERATIONS_LIVE_SECONDS):
        return False
    _operations_broadcast(operations_parts(), {"overview": operations_overview_state(operations_overview(None))})
    return True
