"""Who is reading: a session user, a user JWT (`?token=` or `Authorization: Bearer`), or nobody."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rest_framework.exceptions import AuthenticationFailed
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError

from coordinator.models import User
from progress import conf
from progress.db import db_call
from progress.selectors import Viewer


@dataclass(frozen=True)
class Access:
    """The outcome of authenticating a reader: a viewer, or a refusal (401 / 403)."""

    viewer: Viewer | None
    status: int = 200
    message: str = ""


def viewer_for(user: User) -> Viewer:
    """What this user may read: everything for admins (or when progress is public), else their own."""
    return Viewer(sees_all=bool(user.is_admin) or conf.public(), user_id=int(user.pk))


def _from_token(raw: str) -> Access:
    auth = JWTAuthentication()
    try:
        user = auth.get_user(auth.get_validated_token(raw.encode()))
    except (InvalidToken, TokenError):
        return Access(None, 401, "The token is invalid or expired.")
    except AuthenticationFailed:  # the token's user is gone or inactive (simplejwt's detail is a dict)
        return Access(None, 403, "This account may not read progress.")
    if not isinstance(user, User) or not user.is_active:
        return Access(None, 403, "This account may not read progress.")
    return Access(viewer_for(user))


async def access_for(*, session_user: Any, token: str | None) -> Access:
    """Authenticate by token when one is given, else by the session; anonymous only if public."""
    if token:
        return await db_call(_from_token)(token)
    if isinstance(session_user, User) and session_user.is_authenticated:
        if not session_user.is_active:
            return Access(None, 403, "This account may not read progress.")
        return Access(viewer_for(session_user))
    if conf.public():
        return Access(Viewer(sees_all=True))
    return Access(None, 401, "Log in, or pass a user JWT as ?token= or Authorization: Bearer.")
