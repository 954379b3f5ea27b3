"""Every model has a factory in tests/factories.py, and each makes a row the database accepts."""

from __future__ import annotations

import factory
import pytest
from django.apps import apps

from tests import factories

OUR_APPS = ("coordinator", "pool", "farm", "jobs", "progress", "webhooks")


def all_factories() -> list[type[factory.django.DjangoModelFactory]]:
    return [
        value
        for value in vars(factories).values()
        if isinstance(value, type)
        and issubclass(value, factory.django.DjangoModelFactory)
        and value is not factory.django.DjangoModelFactory
    ]


def test_every_model_has_a_factory() -> None:
    covered = {f._meta.get_model_class() for f in all_factories()}
    models = {model for label in OUR_APPS for model in apps.get_app_config(label).get_models()}
    assert sorted(m._meta.label for m in models - covered) == []


@pytest.mark.django_db
@pytest.mark.parametrize("model_factory", all_factories(), ids=lambda f: f.__name__)
def test_each_factory_makes_a_valid_row(model_factory: type[factory.django.DjangoModelFactory]) -> None:
    row = model_factory()
    row.full_clean(exclude=["password", "secret_hash"])
    assert type(row).objects.filter(pk=row.pk).exists()
