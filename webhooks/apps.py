from __future__ import annotations

from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    """Signed webhooks, fed by progress events (by topic) and delivered by jobs.

    Its own app: it consumes `progress` events and queues `jobs`, and `progress` may import no app
    while `coordinator` may import none at all, so neither could hold it (docs/operations.md)."""

    name = "webhooks"
    verbose_name = "Webhooks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from progress.services import progress_listen
        from webhooks.services import event_received

        progress_listen(event_received)
