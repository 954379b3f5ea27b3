"""The user admin: role column, filter and search; roles decide admin rights."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import UserChangeForm, UserCreationForm
from django.db.models import QuerySet
from django.http import HttpRequest

from coordinator.models import Role, User


class UserCreateForm(UserCreationForm):
    class Meta:
        model = User
        fields = ("email", "name", "role")


class UserEditForm(UserChangeForm):
    class Meta:
        model = User
        fields = ("email", "name", "role", "is_active", "is_staff")


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
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

    @admin.display(description="Role", ordering="role")
    def role_badge(self, obj: User) -> str:
        return obj.get_role_display()

    def _set_role(self, request: HttpRequest, queryset: QuerySet[User], role: str) -> None:
        count = 0
        for user in queryset:
            user.role = role
            user.save()
            count += 1
        self.message_user(request, f"{count} user(s) now have the {role} role.")

    @admin.action(description="Give the admin role")
    def make_admin(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        self._set_role(request, queryset, Role.ADMIN)

    @admin.action(description="Give the master role")
    def make_master(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        self._set_role(request, queryset, Role.MASTER)

    @admin.action(description="Give the user role")
    def make_user(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        self._set_role(request, queryset, Role.USER)

    @admin.action(description="Deactivate (cannot log in or call the API)")
    def deactivate(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        # Never lock oneself out.
        updated = queryset.exclude(email=getattr(request.user, "email", "")).update(is_active=False)
        self.message_user(request, f"{updated} user(s) deactivated.")
