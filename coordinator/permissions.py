"""Reusable permission classes, one per role rule.

A request is from a *platform user* when `request.user` is our `User` (session or user JWT).
Devices authenticate with their own token class and never pass these checks.
"""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from coordinator.models import Role, User


def platform_user(request: Request) -> User | None:
    user = getattr(request, "user", None)
    if isinstance(user, User) and user.is_active:
        return user
    return None


def sees_operations(user: Any) -> bool:
    """Who sees the operations dashboard: its panels on the admin index and its live topic. The
    active staff the admin site lets in (Django's AdminSite.has_permission): the index that shows
    them the panels is theirs, so the live updates of the same numbers are theirs too. Plain users
    never (the counts are platform-wide, not their own)."""
    return isinstance(user, User) and user.is_active and user.is_staff


class IsPlatformUser(BasePermission):
    """Any active user of the platform, whatever the role."""

    message = "Authentication as a platform user is required."

    def has_permission(self, request: Request, view: Any) -> bool:
        return platform_user(request) is not None


class _RolePermission(BasePermission):
    roles: frozenset[str] = frozenset()

    def has_permission(self, request: Request, view: Any) -> bool:
        user = platform_user(request)
        return user is not None and user.role in self.roles


class IsAdmin(_RolePermission):
    message = "This endpoint requires the admin role."
    roles = frozenset({Role.ADMIN})


class IsMasterOrAdmin(_RolePermission):
    message = "This endpoint requires the master or admin role."
    roles = frozenset({Role.MASTER, Role.ADMIN})


def has_role(*roles: str) -> type[BasePermission]:
    """A permission class for an arbitrary set of roles: `permission_classes = [has_role("master")]`."""
    return type(
        f"HasRole_{'_'.join(roles)}",
        (_RolePermission,),
        {"roles": frozenset(roles), "message": f"This endpoint requires one of the roles: {', '.join(roles)}."},
    )
