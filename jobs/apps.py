from __future__ import annotations

import time
from types import ModuleType
from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class JobsConfig(AppConfig):
    verbose_name = "Background jobs"
    name = "jobs"
    default_auto_field = "django.db.models.BigAutoField"

    def operations(self) -> ModuleType:
        """Its panel of the operations dashboard (coordinator.selectors.operations_parts)."""
        from jobs import operations

        return operations

    def ready(self) -> None:
        import importlib

        from django.utils.module_loading import autodiscover_modules

        from coordinator.metrics import register_collector
        from jobs import conf
        from jobs.metrics import JobsCollector

        # Every installed app's `jobs.py` declares its job functions with `@job`.
        autodiscover_modules("jobs")
        for module in conf.extra_modules():
            importlib.import_module(module)
        post_migrate.connect(_create_run_permissions, sender=self)
        register_collector(JobsCollector())

    def health(self) -> dict[str, str]:
        """For /healthz: the job clusters' liveness and the export directory's free space."""
        from coordinator.selectors import disk_state
        from jobs import conf
        from jobs.selectors import cluster_state

        return {"job cluster": cluster_state(), "export disk": disk_state(conf.export_root())}

    def serve_watches(self) -> list[dict[str, Any]]:
        """For `serve`'s watchdog (coordinator/serving/watchdog.py): the job cluster it runs is
        restarted when it makes no progress, and the jobs it had fetched are queued again."""
        from jobs import conf
        from jobs.selectors import cluster_stall
        from jobs.services import jobs_requeue_undelivered

        return [
            {
                "process": "jobs",
                "stall": cluster_stall,
                # Nobody holds the stopped cluster's fetched jobs now (a cluster elsewhere that
                # holds one loses the claim harmlessly).
                "after_stop": lambda: jobs_requeue_undelivered(after_seconds=0),
                "window_seconds": conf.stall_seconds(),
            }
        ]

    def admin_dashboard(self, request: Any) -> list[dict[str, Any]]:
        from django.urls import reverse

        from jobs.selectors import job_counts, jobs_heartbeat_stale, sweep_last_seen

        counts = job_counts()
        url = reverse("admin:jobs_job_changelist")
        swept = sweep_last_seen()
        return [
            {
                "title": "Jobs running",
                "value": counts.get("started", 0),
                "url": f"{url}?status__exact=started",
                "note": f"{counts.get('fresh', 0)} waiting",
            },
            {
                "title": "Jobs failed",
                "value": counts.get("failure", 0),
                "url": f"{url}?status__exact=failure",
                "note": f"{counts.get('success', 0)} succeeded",
            },
            {
                "title": "Jobs with a stale heartbeat",
                "value": jobs_heartbeat_stale().count(),
                "url": f"{url}?stuck=stale",
                "note": "started, worker silent: the sweep runs them again",
            },
            {
                "title": "Job recovery sweep",
                "value": f"{max(0, round(time.time() - swept))} s ago" if swept is not None else "never ran",
                "url": f"{url}?status__exact=started",
                "note": "each cluster sweeps lost workers' jobs",
            },
        ]


def _create_run_permissions(**kwargs: Any) -> None:
    from jobs.selectors import job_permissions_sync

    job_permissions_sync()
