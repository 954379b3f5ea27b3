"""Errors of the webhooks app, each with a stable code and HTTP status."""

from __future__ import annotations

from coordinator.errors import ConflictError, NotFoundError, ValidationFailedError


class WebhookNotFoundError(NotFoundError):
    code = "webhook_not_found"
    default_message = "No such webhook."


class WebhookUrlError(ValidationFailedError):
    """A URL that is not http(s), has no host, or points at an address that is not allowed."""

    code = "validation_error"


class TooManyWebhooksError(ConflictError):
    """The owner already has WEBHOOKS_PER_OWNER webhooks."""

    code = "too_many_webhooks"
