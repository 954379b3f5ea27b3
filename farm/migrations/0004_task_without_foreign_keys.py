"""Tasks without database-level foreign keys or a worker index; `Worker.tasks_done` counts finished tasks.

PostgreSQL checked both foreign keys of every inserted or re-assigned task row, and every hand-out
and completion also wrote an entry in the worker index: together about a quarter of the batch
path's throughput (docs/farm.md, "Storage"). The counter starts from the done rows there are."""

import django.db.models.deletion
from django.db import migrations, models
from django.db.models import Count, Q


def count_done_tasks(apps, schema_editor):
    Worker = apps.get_model("farm", "Worker")
    counted = Worker.objects.annotate(n=Count("tasks", filter=Q(tasks__status="done"))).filter(n__gt=0)
    for worker_id, n in counted.values_list("id", "n").iterator():
        Worker.objects.filter(pk=worker_id).update(tasks_done=n)


class Migration(migrations.Migration):
    dependencies = [
        ("farm", "0003_task_partial_indexes"),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="task",
            name="farm_task_computing",
        ),
        migrations.AddField(
            model_name="worker",
            name="tasks_done",
            field=models.BigIntegerField(default=0),
        ),
        migrations.RunPython(count_done_tasks, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="task",
            name="run",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="tasks",
                to="farm.run",
            ),
        ),
        migrations.AlterField(
            model_name="task",
            name="worker",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="tasks",
                to="farm.worker",
            ),
        ),
        migrations.AddIndex(
            model_name="task",
            index=models.Index(
                condition=models.Q(("status", "computing")),
                fields=["run", "updated", "worker"],
                name="farm_task_computing",
            ),
        ),
    ]
