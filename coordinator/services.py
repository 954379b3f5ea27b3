"""Writes on users."""

from __future__ import annotations

from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email
from django.db import transaction

from coordinator.errors import ValidationFailedError
from coordinator.models import Role, User


@transaction.atomic
def user_create_or_update(
    *, email: str, role: str, password: str | None, name: str | None = None, check_password: bool = True
) -> tuple[User, bool]:
    """Create the user with this email, or update its role (and password, when given). Returns (user, created)."""
    email = email.strip().lower()
    try:
        validate_email(email)
    except DjangoValidationError as exc:
        raise ValidationFailedError(f"{email!r} is not a valid email address.", extra={"fields": {"email": exc.messages}}) from exc
    if role not in Role.values:
        raise ValidationFailedError(
            f"Unknown role {role!r}; use one of {', '.join(Role.values)}.", extra={"fields": {"role": [role]}}
        )
    user = User.objects.select_for_update().filter(email=email).first()
    created = user is None
    if user is None:
        user = User(email=email)
    user.role = role
    if name is not None:
        user.name = name
    if password is not None:
        if check_password:
            try:
                validate_password(password, user)
            except DjangoValidationError as exc:
                raise ValidationFailedError(
                    "The password is too weak: " + " ".join(exc.messages), extra={"fields": {"password": exc.messages}}
                ) from exc
        user.set_password(password)
    elif created:
        raise ValidationFailedError("A new user needs a password.", extra={"fields": {"password": ["required"]}})
    user.save()
    return user, created
