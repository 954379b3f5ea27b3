"""Reads of the webhooks app."""

from __future__ import annotations

from django.db.models import QuerySet

from coordinator.models import Role, User
from webhooks.errors import WebhookNotFoundError
from webhooks.models import Subscription


def subscription_list(*, user: User) -> QuerySet[Subscription]:
    """The webhooks a user may see: an admin every one, anyone else their own."""
    qs = Subscription.objects.order_by("-id")
    return qs if user.role == Role.ADMIN else qs.filter(owner=user)


def subscription_get(*, user: User, subscription_id: int) -> Subscription:
    """One webhook the user may see and change, or WebhookNotFoundError (also for another's)."""
    # ids beyond the column's range cannot exist (and the database would refuse the comparison)
    found = subscription_list(user=user).filter(pk=subscription_id).first() if 0 < subscription_id < 2**63 else None
    if found is None:
        raise WebhookNotFoundError(extra={"id": subscription_id})
    return found
