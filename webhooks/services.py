"""Writes of the webhooks app: subscriptions, turning progress events into deliveries, and
delivering them (signed), with retries by the jobs app and a cut-off after repeated failures."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import uuid
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from coordinator.errors import PermissionDeniedError, ValidationFailedError
from coordinator.models import Role, User
from coordinator.services import audit_record
from progress.events import Event
from progress.watchdog import alert_raise, alert_resolve
from webhooks import net
from webhooks.errors import SecretUnreadableError, TooManyWebhooksError
from webhooks.models import Delivery, EventType, Subscription
from webhooks.sealing import secret_seal, secret_unseal

logger = logging.getLogger("webhooks")

DELIVER_JOB = "webhooks.deliver"
# A subscription whose deliveries failed this many times in a row is disabled, with a notice.
DISABLE_AFTER_FAILURES = 50
# Retries: the delay doubles from one minute; the 11th attempt comes about 17 h after the first,
# the last one that falls within 24 h (a 12th would come after 34 h).
RETRY_BASE_SECONDS = 60.0
DELIVERY_ATTEMPTS = 11


class DeliveryFailedError(Exception):
    """One delivery attempt failed (the job is retried with backoff while attempts remain)."""


def _secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def _clean_events(events: Any) -> list[str]:
    if not isinstance(events, list) or not events or not all(isinstance(e, str) for e in events):
        raise ValidationFailedError(
            "`events` must be a non-empty list of event types.", extra={"fields": {"events": ["invalid"]}}
        )
    unknown = sorted(set(events) - set(EventType.values))
    if unknown:
        raise ValidationFailedError(
            f"Unknown event type(s): {', '.join(unknown)}; use {', '.join(EventType.values)}.",
            extra={"fields": {"events": unknown}},
        )
    return list(dict.fromkeys(events))


def _clean_secret(secret: Any) -> str:
    if not isinstance(secret, str) or not 16 <= len(secret) <= 200 or "\x00" in secret:
        raise ValidationFailedError(
            "A secret must be text of 16 to 200 characters.", extra={"fields": {"secret": ["invalid"]}}
        )
    return secret


def _event_owner_for(owner: User, event_owner: User | None) -> User | None:
    """Whose events a subscription receives: anyone's may be chosen by an admin; others get their own."""
    if owner.role == Role.ADMIN:
        return event_owner
    if event_owner is not None and event_owner.pk != owner.pk:
        raise PermissionDeniedError("Only an admin may subscribe to another user's events.")
    return owner


def _shown(subscription: Subscription) -> dict[str, Any]:
    return {"url": subscription.url, "events": subscription.events, "enabled": subscription.enabled}


def subscription_cap_check(*, owner: User) -> None:
    """Raise TooManyWebhooksError when `owner` already has WEBHOOKS_PER_OWNER webhooks."""
    if Subscription.objects.filter(owner=owner).count() >= settings.WEBHOOKS_PER_OWNER:
        raise TooManyWebhooksError(
            f"At most {settings.WEBHOOKS_PER_OWNER} webhooks per user; delete one first.",
            extra={"limit": settings.WEBHOOKS_PER_OWNER},
        )


@transaction.atomic
def subscription_create(
    *, owner: User, url: str, events: Any, secret: str | None = None, event_owner: User | None = None
) -> tuple[Subscription, str]:
    """Subscribe `url` to `events`; returns the subscription and its secret (generated when none is
    given), which is shown this once."""
    net.resolve(url)
    # The owner's row is locked so that concurrent creates cannot pass the cap together.
    User.objects.select_for_update().filter(pk=owner.pk).first()
    subscription_cap_check(owner=owner)
    chosen = _clean_secret(secret) if secret is not None else _secret()
    subscription = Subscription.objects.create(
        owner=owner,
        url=url,
        events=_clean_events(events),
        event_owner=_event_owner_for(owner, event_owner),
        secret_sealed=secret_seal(chosen),
    )
    audit_record(action="webhook.create", target=subscription, after=_shown(subscription))
    return subscription, chosen


@transaction.atomic
def subscription_update(
    *,
    subscription: Subscription,
    url: str | None = None,
    events: Any = None,
    secret: str | None = None,
    rotate_secret: bool = False,
    enabled: bool | None = None,
) -> tuple[Subscription, str | None]:
    """Change a subscription; returns it and its new secret when one was set or generated (shown once).
    Enabling it again clears its failure count and resolves its notice."""
    locked = Subscription.objects.select_for_update().get(pk=subscription.pk)
    before = _shown(locked)
    new_secret: str | None = None
    if url is not None:
        net.resolve(url)
        locked.url = url
    if events is not None:
        locked.events = _clean_events(events)
    if secret is not None:
        new_secret = _clean_secret(secret)
    elif rotate_secret:
        new_secret = _secret()
    if new_secret is not None:
        locked.secret_sealed = secret_seal(new_secret)
    if enabled is not None:
        if enabled and not locked.enabled:
            locked.consecutive_failures, locked.disabled_reason = 0, ""
            alert_resolve(key=f"webhook:{locked.pk}")
        locked.enabled = enabled
    locked.save()
    after = _shown(locked) | ({"secret": "changed"} if new_secret else {})
    audit_record(action="webhook.update", target=locked, before=before, after=after)
    return locked, new_secret


@transaction.atomic
def subscription_delete(*, subscription: Subscription) -> None:
    """Delete a subscription and its delivery log."""
    audit_record(action="webhook.delete", target=subscription, before=_shown(subscription))
    Subscription.objects.filter(pk=subscription.pk).delete()


# --- From progress events to deliveries -------------------------------------------------------


def event_for(event: Event) -> tuple[str, dict[str, Any]] | None:
    """The webhook event type and data a progress event stands for, or None. Topics name the
    domain (`job:`, `run:`, `pooltask:` — a rollout abort is its end with the reason —, `alert:`); only
    ends (and raised alerts) count."""
    kind, state = event["kind"], event["state"] or {}
    prefix, _, key = event["topic"].partition(":")
    if prefix == "alert":
        kind_type = {"new": EventType.ALERT_RAISED, "end": EventType.ALERT_RESOLVED}.get(kind)
        return (kind_type, {"alert": key, **state}) if kind_type else None
    if kind != "end":
        return None
    if prefix == "job" and key.isdigit():
        from jobs.models import Job

        row = Job.objects.filter(pk=int(key)).values_list("type", "status").first()
        if row is None or row[0] == DELIVER_JOB:  # a delivery's own job never announces itself
            return None
        job_type, status = row
        if status not in (Job.Status.SUCCESS, Job.Status.FAILURE):
            return None
        name = EventType.JOB_FINISHED if status == Job.Status.SUCCESS else EventType.JOB_FAILED
        data = {"job_id": int(key), "type": job_type, "status": state.get("label", status), "error": event["text"]}
        return name, data
    if prefix == "run" and state:  # a deleted run ends with no counts: it did not finish
        return EventType.RUN_FINISHED, {"run": key, "text": event["text"], **state}
    if prefix == "pooltask":
        # A staged rollout's abort ends its task's topic with the reason (pool.rollouts).
        if state.get("aborted"):
            return EventType.ROLLOUT_ABORTED, {"task": key, "reason": state["aborted"], "text": event["text"], **state}
        return EventType.DEVICE_TASK_FINISHED, {"task": key, "text": event["text"], **state}
    return None


def event_received(event: Event) -> None:
    """The progress listener: queue a delivery for every enabled subscription that wants this event.

    Runs in the publisher's transaction, on the hot paths of jobs, runs and device tasks: events
    no webhook announces (messages, starts) cost nothing, an end costs one read of the
    subscriptions, and only when there are some does the rest run, in a savepoint that keeps a
    failure here out of the publisher's work."""
    prefix = event["topic"].partition(":")[0]
    announced = event["kind"] == "end" or (event["kind"] == "new" and prefix == "alert")
    if not announced or prefix not in ("job", "run", "pooltask", "alert"):
        return
    # A deactivated owner receives nothing (a former admin would go on receiving everyone's events),
    # and their delivery job could not be created, which would fail the event for every subscriber.
    subscriptions = list(Subscription.objects.filter(enabled=True, owner__is_active=True).select_related("owner"))
    if not subscriptions:
        return
    try:
        with transaction.atomic():
            deliveries_create(event, subscriptions)
    except Exception:  # webhooks never break the work whose event they announce
        logger.exception("Queueing webhooks for %s failed", event["topic"])


def deliveries_create(event: Event, subscriptions: list[Subscription]) -> list[Delivery]:
    """Create the deliveries (and their jobs) of one progress event for these subscriptions."""
    found = event_for(event)
    if found is None:
        return []
    event_type, data = found
    payload: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "type": event_type,
        "created_at": datetime.fromtimestamp(event["at"], UTC).isoformat().replace("+00:00", "Z"),
        "data": data,
    }
    made = []
    for subscription in subscriptions:
        if event_type not in subscription.events:
            continue
        # Whose events it may see is decided now, from its owner's current role.
        only = subscription.event_owner_id if subscription.owner.role == Role.ADMIN else subscription.owner_id
        if only is not None and event["owner_id"] != only:
            continue
        made.append(
            Delivery.objects.create(
                subscription=subscription, event_id=payload["id"], event_type=event_type, payload=payload
            )
        )
    for delivery in made:
        delivery_queue(delivery=delivery)
    return made


def delivery_queue(*, delivery: Delivery) -> Delivery:
    """Create the job that sends this delivery (queued once the caller's transaction commits). It
    runs as the subscription's owner, who sees it among their jobs; nobody may submit it directly."""
    from jobs.services import job_create

    owner = delivery.subscription.owner
    job = job_create(type=DELIVER_JOB, data={"delivery_id": delivery.pk}, user=owner, allowed_tasks={DELIVER_JOB: 1})
    Delivery.objects.filter(pk=delivery.pk).update(job_id=job.pk)
    delivery.job_id = job.pk
    return delivery


@transaction.atomic
def delivery_redeliver(*, delivery: Delivery) -> Delivery:
    """Send a delivery again, with a fresh budget of attempts (staff's redeliver action)."""
    Delivery.objects.filter(pk=delivery.pk).update(status=Delivery.Status.PENDING, error="")
    delivery.refresh_from_db()
    audit_record(action="webhook.redeliver", target=delivery)
    return delivery_queue(delivery=delivery)


# --- Sending ----------------------------------------------------------------------------------


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """`sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`, as in the X-Coordinator-Signature header."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def body_of(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def delivery_attempt(*, delivery_id: int, final: bool) -> str:
    """Send one delivery once; raises DeliveryFailedError on failure (the job retries it unless
    `final`). A refused address and a disabled subscription are final outcomes, not failures."""
    delivery = Delivery.objects.select_related("subscription").filter(pk=delivery_id).first()
    if delivery is None:
        return "gone"
    subscription = delivery.subscription
    now = timezone.now()
    if not subscription.enabled:
        Delivery.objects.filter(pk=delivery.pk).update(status=Delivery.Status.SKIPPED, last_attempt_at=now)
        return Delivery.Status.SKIPPED
    try:
        target = net.resolve(subscription.url)
    except Exception as exc:  # checked again now: the name may resolve elsewhere than at subscription
        message = getattr(exc, "message", str(exc))
        Delivery.objects.filter(pk=delivery.pk).update(
            status=Delivery.Status.REFUSED, error=message, last_attempt_at=now, attempts=F("attempts") + 1
        )
        return Delivery.Status.REFUSED
    try:
        secret = secret_unseal(subscription.secret_sealed)
    except SecretUnreadableError as exc:  # no retry mends it: only a new secret does
        Delivery.objects.filter(pk=delivery.pk).update(
            status=Delivery.Status.REFUSED, error=exc.message, last_attempt_at=now, attempts=F("attempts") + 1
        )
        return Delivery.Status.REFUSED
    body = body_of(delivery.payload)
    timestamp = int(now.timestamp())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Coordinator-Webhooks/1",
        "X-Coordinator-Event": delivery.event_type,
        "X-Coordinator-Timestamp": str(timestamp),
        "X-Coordinator-Signature": signature(secret, timestamp, body),
        "X-Coordinator-Delivery": str(delivery.pk),
    }
    code: int | None = None
    duration: int | None = None
    try:
        answer = net.post(target, body, headers)
        code, duration = answer.status, answer.duration_ms
        error = "" if 200 <= answer.status < 300 else f"HTTP {answer.status}: {answer.body[:500]}"
    except Exception as exc:  # a refused connection, a timeout, a TLS error: one failed attempt
        error = f"{type(exc).__name__}: {exc}"
    if not error:
        with transaction.atomic():
            Delivery.objects.filter(pk=delivery.pk).update(
                status=Delivery.Status.DELIVERED,
                response_code=code,
                duration_ms=duration,
                error="",
                last_attempt_at=now,
                delivered_at=timezone.now(),
                attempts=F("attempts") + 1,
            )
            Subscription.objects.filter(pk=subscription.pk).update(consecutive_failures=0)
        return Delivery.Status.DELIVERED
    _failure_record(delivery, subscription, code=code, duration=duration, error=error, final=final, now=now)
    raise DeliveryFailedError(error)


@transaction.atomic
def _failure_record(
    delivery: Delivery,
    subscription: Subscription,
    *,
    code: int | None,
    duration: int | None,
    error: str,
    final: bool,
    now: datetime,
) -> None:
    Delivery.objects.filter(pk=delivery.pk).update(
        status=Delivery.Status.FAILED if final else Delivery.Status.RETRYING,
        response_code=code,
        duration_ms=duration,
        error=error[:2000],
        last_attempt_at=now,
        attempts=F("attempts") + 1,
    )
    Subscription.objects.filter(pk=subscription.pk).update(consecutive_failures=F("consecutive_failures") + 1)
    # Guarded: only the attempt that crosses the limit disables it (and raises one notice).
    if Subscription.objects.filter(
        pk=subscription.pk, enabled=True, consecutive_failures__gte=DISABLE_AFTER_FAILURES
    ).update(
        enabled=False,
        disabled_reason=f"Disabled after {DISABLE_AFTER_FAILURES} failed deliveries in a row; last: {error[:200]}",
    ):
        subscription.refresh_from_db()
        logger.warning("webhook %s disabled: %s", subscription.pk, subscription.disabled_reason)
        alert_raise(
            key=f"webhook:{subscription.pk}",
            message=f"Webhook {subscription.pk} ({subscription.url[:100]}) disabled: {subscription.disabled_reason}",
            owner_id=subscription.owner_id,
        )
