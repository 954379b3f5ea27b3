from __future__ import annotations

from typing import Any

import factory

from coordinator.models import Role, User

DEFAULT_PASSWORD = "correct-horse-battery"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    email = factory.Sequence(lambda n: f"user{n}@example.com")
    name = factory.Faker("name")
    role = Role.USER

    @factory.post_generation
    def password(obj: User, create: bool, extracted: Any, **kwargs: Any) -> None:  # noqa: N805
        obj.set_password(extracted or DEFAULT_PASSWORD)
        if create:
            obj.save()
