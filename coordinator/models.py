"""The platform's one user model: email as the login, a role of admin, master or user."""

from __future__ import annotations

from typing import Any, ClassVar

from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.db import models
from django.utils import timezone


class Role(models.TextChoices):
    """The roles of seed 000 (task-pool-backend's `UserRole`)."""

    ADMIN = "admin", "Admin"
    MASTER = "master", "Master"
    USER = "user", "User"


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def create_user(self, email: str, password: str | None = None, **extra: Any) -> User:
        if not email:
            raise ValueError("An email address is required.")
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def get_by_natural_key(self, username: str | None) -> User:
        # Emails are stored lower-cased, so logins are case-insensitive.
        return self.get(email=(username or "").strip().lower())

    def create_superuser(self, email: str, password: str | None = None, **extra: Any) -> User:
        extra["role"] = Role.ADMIN
        return self.create_user(email, password, **extra)


class User(AbstractBaseUser, PermissionsMixin):
    email = models.EmailField("email address", unique=True)
    name = models.CharField(max_length=150, blank=True)
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.USER, db_index=True)
    is_active = models.BooleanField(default=True)
    is_staff = models.BooleanField(
        default=False,
        help_text="May log into the admin. Always true for the admin role.",
    )
    date_joined = models.DateTimeField(default=timezone.now)

    objects: ClassVar[UserManager] = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: ClassVar[list[str]] = []

    class Meta:
        ordering = ["email"]

    def __str__(self) -> str:
        return self.email

    def save(self, *args: Any, **kwargs: Any) -> None:
        # The role is the single source of truth for admin rights: an admin is staff and has every
        # permission, nobody else is a superuser (role changes go through `user_set_role`, which
        # also takes staff status away from a demoted admin).
        self.email = self.email.lower()
        self.is_superuser = self.role == Role.ADMIN
        if self.is_superuser:
            self.is_staff = True
        super().save(*args, **kwargs)

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN

    @property
    def is_master(self) -> bool:
        return self.role == Role.MASTER

    @property
    def address(self) -> str:
        """How this user appears in message `from`/`to` fields (`user:<email>`)."""
        return f"user:{self.email}"


class IdempotentAnswer(models.Model):
    """The first answer to a creating request sent with an `Idempotency-Key` header, replayed to
    its retries for IDEMPOTENCY_KEEP (coordinator/api/idempotency.py). `scope` is a hash of the
    method, the path and who asked; `fingerprint` a hash of the body."""

    scope = models.CharField(max_length=64)
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64)
    status = models.PositiveSmallIntegerField()
    content = models.BinaryField()
    content_type = models.CharField(max_length=200)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["scope", "key"], name="idempotent_answer_unique_key")]

    def __str__(self) -> str:
        return f"{self.key} ({self.status})"


class AuditEntryImmutableError(Exception):
    """Raised on any attempt to change or remove an audit entry: the trail is append-only."""


class AuditEntryQuerySet(models.QuerySet["AuditEntry"]):
    def update(self, **kwargs: Any) -> int:
        raise AuditEntryImmutableError("Audit entries cannot be changed.")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise AuditEntryImmutableError("Audit entries cannot be deleted.")


class AuditEntry(models.Model):
    """One operator action: who, when, from which address, what, on which target, the values
    before and after, and (`details`) the further changes the same action made. Append-only: the
    model, its querysets and (on PostgreSQL) a trigger refuse every update and delete."""

    at = models.DateTimeField(default=timezone.now, db_index=True)
    # No database constraint and no cascade: deleting a user keeps the entries (and the email).
    actor = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    actor_label = models.CharField("who", max_length=254, blank=True, default="")
    address = models.CharField(max_length=64, blank=True, default="")
    action = models.CharField(max_length=100, db_index=True)
    target_type = models.CharField(max_length=100, blank=True, default="", db_index=True)
    target_id = models.CharField(max_length=64, blank=True, default="")
    target_label = models.CharField("target", max_length=200, blank=True, default="")
    before = models.JSONField(default=dict, blank=True)
    after = models.JSONField(default=dict, blank=True)
    details = models.JSONField(default=list, blank=True)

    objects = AuditEntryQuerySet.as_manager()

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name = "audit entry"
        verbose_name_plural = "audit trail"
        indexes = [models.Index(fields=["target_type", "target_id"], name="audit_entry_target")]

    def __str__(self) -> str:
        return f"{self.action} {self.target_label}".strip()

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise AuditEntryImmutableError("Audit entries cannot be changed.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise AuditEntryImmutableError("Audit entries cannot be deleted.")


class MetricMinute(models.Model):
    """One value of one dashboard series for one minute, recorded every minute by
    `operations_record` and pruned after OPERATIONS_RETENTION_HOURS: the admin's charts read these
    rows, never the tables they were counted from."""

    series = models.CharField(max_length=64)
    # The minute's start in Unix seconds: a chart reads thousands of these per page, and whole
    # numbers group into coarser buckets the same way in SQL on every database (`minute / 300`).
    minute = models.BigIntegerField()
    value = models.FloatField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["series", "minute"], name="metric_minute_unique")]

    def __str__(self) -> str:
        return f"{self.series} @{self.minute} {self.value:g}"
