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


class SecretUnreadableError(ConflictError):
    """A stored signing secret that no key of WEBHOOKS_SECRET_KEYS opens (the key that sealed it
    was removed): the webhook needs a new secret."""

    code = "webhook_secret_unreadable"
    default_message = (
        "This webhook's secret cannot be decrypted with WEBHOOKS_SECRET_KEYS (was a key removed?): "
        "give it a new secret."
    )
