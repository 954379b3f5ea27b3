"""Webhook signing secrets are stored encrypted (webhooks/sealing.py): each clear secret is sealed
into `secret_sealed`, and the clear column goes. Reversible: unsealing writes them back."""

from typing import Any

from django.db import migrations, models

from webhooks.sealing import secret_seal, secret_unseal


def seal_all(apps: Any, schema_editor: Any) -> None:
    Subscription = apps.get_model("webhooks", "Subscription")
    for subscription in Subscription.objects.using(schema_editor.connection.alias).iterator(chunk_size=1000):
        subscription.secret_sealed = secret_seal(subscription.secret)
        subscription.save(update_fields=["secret_sealed"])


def unseal_all(apps: Any, schema_editor: Any) -> None:
    Subscription = apps.get_model("webhooks", "Subscription")
    for subscription in Subscription.objects.using(schema_editor.connection.alias).iterator(chunk_size=1000):
        subscription.secret = secret_unseal(subscription.secret_sealed)
        subscription.save(update_fields=["secret"])


class Migration(migrations.Migration):
    dependencies = [
        ("webhooks", "0001_subscriptions_and_deliveries"),
    ]

    operations = [
        # A default, so that going back can add the clear column to existing rows before filling it.
        migrations.AlterField(
            model_name="subscription", name="secret", field=models.CharField(max_length=200, default="")
        ),
        migrations.AddField(
            model_name="subscription",
            name="secret_sealed",
            field=models.TextField(default=""),
            preserve_default=False,
        ),
        migrations.RunPython(seal_all, unseal_all, elidable=False),
        migrations.RemoveField(model_name="subscription", name="secret"),
    ]
