"""The user admin: role column, filter and search; roles decide admin rights."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import UserChangeForm, UserCreationForm
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest

from coordinator.admin_site import ReadOnlyAdmin, SafeSelectionMixin, is_admin_request
from coordinator.errors import ApplicationError
from coordinator.models import AuditEntry, Role, User
from coordinator.services import user_deactivate, user_set_role


class UserCreateForm(UserCreationForm):
    class Meta:
        model = User
        fields = ("email", "name", "role")


class UserEditForm(UserChangeForm):
    class Meta:
        model = User
        fields = ("email", "name", "role", "is_active", "is_staff")


@admin.register(User)
class UserAdmin(SafeSelectionMixin, DjangoUserAdmin):
    form = UserEditForm
    add_form = UserCreateForm
    list_display = ("email", "name", "role_badge", "is_active", "is_staff", "date_joined", "last_login")
    list_filter = ("role", "is_active", "is_staff")
    search_fields = ("email", "name")
    ordering = ("email",)
    readonly_fields = ("date_joined", "last_login")
    actions = ["make_admin", "make_master", "make_user", "deactivate"]
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        ("Profile", {"fields": ("name", "role")}),
        ("Access", {"fields": ("is_active", "is_staff", "groups", "user_permissions")}),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "name", "role", "password1", "password2")}),)
    filter_horizontal = ("groups", "user_permissions")

    # Fields that decide what an account may do: only admins edit them (anyone else with the
    # change permission could otherwise grant themselves every permission).
    ACCESS_FIELDS = ("role", "is_staff", "is_superuser", "groups", "user_permissions")

    @admin.display(description="Role", ordering="role")
    def role_badge(self, obj: User) -> str:
        return obj.get_role_display()

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = tuple(super().get_readonly_fields(request, obj))
        if not is_admin_request(request):
            fields += self.ACCESS_FIELDS
        return fields

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # An admin's account (its password, its email) is changed only by admins.
        if isinstance(obj, User) and obj.role == Role.ADMIN and not is_admin_request(request):
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if isinstance(obj, User) and obj.role == Role.ADMIN and not is_admin_request(request):
            return False
        return super().has_delete_permission(request, obj)

    def has_admin_permission(self, request: HttpRequest) -> bool:
        """For the actions that grant or remove the admin role."""
        return is_admin_request(request)

    def save_model(self, request: HttpRequest, obj: User, form: Any, change: bool) -> None:
        role = obj.role
        if change and "role" in form.changed_data:
            # Saved first with the role it had; the role then goes through the one rule for roles.
            obj.role = form.initial.get("role", role)
            super().save_model(request, obj, form, change)
            user_set_role(user=obj, role=role, actor=_actor(request))
            return
        if not change and role == Role.ADMIN and not is_admin_request(request):
            raise PermissionDenied("Only an admin can create an admin.")
        super().save_model(request, obj, form, change)

    def _set_role(self, request: HttpRequest, queryset: QuerySet[User], role: str) -> None:
        changed, refused = 0, []
        for user in queryset:
            try:
                changed += user_set_role(user=user, role=role, actor=_actor(request))
            except ApplicationError as exc:
                refused.append(f"{user.email}: {exc.message}")
        self.message_user(request, f"{changed} user(s) now have the {role} role.")
        if refused:
            self.message_user(request, "Not changed: " + "; ".join(refused), messages.ERROR)

    @admin.action(description="Give the admin role", permissions=["admin"])
    def make_admin(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        self._set_role(request, queryset, Role.ADMIN)

    @admin.action(description="Give the master role", permissions=["change"])
    def make_master(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        self._set_role(request, queryset, Role.MASTER)

    @admin.action(description="Give the user role", permissions=["change"])
    def make_user(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        self._set_role(request, queryset, Role.USER)

    @admin.action(description="Deactivate (cannot log in or call the API)", permissions=["change"])
    def deactivate(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        changed, refused = 0, []
        for user in queryset:
            try:
                changed += user_deactivate(user=user, actor=_actor(request))
            except ApplicationError as exc:
                refused.append(f"{user.email}: {exc.message}")
        self.message_user(request, f"{changed} user(s) deactivated.")
        if refused:
            self.message_user(request, "Not changed: " + "; ".join(refused), messages.ERROR)


def _actor(request: HttpRequest) -> User:
    user = request.user
    if not isinstance(user, User):
        raise PermissionDenied
    return user


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    """The audit trail: read and filtered by staff with the view permission, changed by nobody
    (admins included: the model and, on PostgreSQL, the database refuse it as well)."""

    list_display = ("at", "actor_label", "address", "action", "target_type", "target_label")
    list_filter = ("action", "target_type", ("at", admin.DateFieldListFilter))
    search_fields = ("actor_label", "address", "action", "target_label", "=target_id")
    date_hierarchy = "at"
    fields = (
        "at",
        "actor_label",
        "actor_id",
        "address",
        "action",
        "target_type",
        "target_id",
        "target_label",
        "before",
        "after",
        "details",
    )
    readonly_fields = fields
