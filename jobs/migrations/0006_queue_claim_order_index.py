"""An index on django-q2's queue table in the claim's order (a queue's `-high` band first, `-low`
last, then oldest first; jobs.broker.CLAIM_RANK_SQL), so a PostgreSQL claim reads one index entry
instead of sorting the whole queue. SQLite claims through the ORM and gets no such index."""

from __future__ import annotations

from typing import Any

from django.db import migrations

CREATE = (
    "CREATE INDEX IF NOT EXISTS jobs_ormq_claim_order ON django_q_ormq "
    "((CASE WHEN key LIKE '%-high' THEN 0 WHEN key LIKE '%-low' THEN 2 ELSE 1 END), id)"
)
DROP = "DROP INDEX IF EXISTS jobs_ormq_claim_order"


def _on_postgres(sql: str) -> Any:
    def run(apps: Any, schema_editor: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            with schema_editor.connection.cursor() as cursor:
                cursor.execute(sql)  # no parameters: the `%` of LIKE is literal

    return run


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0005_attempts_by_finish_time"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [migrations.RunPython(_on_postgres(CREATE), _on_postgres(DROP))]
