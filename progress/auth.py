"""Who is reading: a session user, a user JWT (`?token=` or `Authorization: Bearer`), or nobody."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from rest_framework.exceptions import AuthenticationFailed
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError

from coordinator.models import User
from coordinator.permissions import sees_operations
from coordinator.tokens import credential_stamp
from progress import conf
from progress.db import db_call
from progress.operations import DASHBOARD_TOPIC
from progress.selectors import Viewer
from progress.services import stream_lease_acquire, stream_lease_release, stream_lease_renew

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Access:
    """The outcome of authenticating a reader: a viewer, or a refusal (401 / 403). An open stream
    asks `still_allowed` from time to time, and ends once its reader may no longer read."""

    viewer: Viewer | None
    status: int = 200
    message: str = ""
    user_id: int | None = None  # the signed-in reader (None: anonymous, progress being public)
    stamp: str = ""  # the user's credential stamp when the stream opened
    expires_at: float | None = None  # the token's expiry (Unix seconds); None: a session


def _allowed_now(access: Access) -> bool:
    if access.expires_at is not None and time.time() >= access.expires_at:
        return False
    if access.user_id is None:
        return True
    user = User.objects.filter(pk=access.user_id, is_active=True).first()
    if user is None or credential_stamp(user) != access.stamp:
        return False
    # A system topic granted by name (the dashboard's, to staff) lasts while its reason does:
    # staff status taken away, the stream ends, and the reader reconnects without it.
    return access.viewer is None or access.viewer.system_topics <= viewer_for(user).system_topics


def _allowed_and_renewed(access: Access, lease: int | None) -> bool:
    return _allowed_now(access) and (lease is None or stream_lease_renew(lease_id=lease))


async def still_allowed(access: Access, lease: int | None = None) -> bool:
    """Whether the reader may still read: the token has not expired, the user is still active with
    the same password and role as when the stream opened, and the stream still holds its slot
    (renewed here: an open stream calls this on each keep-alive)."""
    return await db_call(_allowed_and_renewed)(access, lease)


class TooManyStreams(Exception):
    """The user already holds PROGRESS_STREAMS_PER_USER open streams, counted across all processes."""


async def stream_slot_take(access: Access) -> int | None:
    """The lease of one of the reader's stream slots (None for anonymous readers, who are not
    capped); raises TooManyStreams at the cap."""
    if access.user_id is None:
        return None
    lease = await db_call(stream_lease_acquire)(user_id=access.user_id)
    if lease is None:
        raise TooManyStreams()
    return lease


async def stream_slot_release(lease: int | None) -> None:
    """Give the slot back as the stream ends (a failure here only delays it: the lease expires)."""
    if lease is None:
        return
    try:
        await db_call(stream_lease_release)(lease_id=lease)
    except Exception:
        logger.warning("could not release progress stream lease %s; it expires by itself", lease, exc_info=True)


def _granted(user: User, expires_at: float | None = None) -> Access:
    return Access(viewer_for(user), user_id=int(user.pk), stamp=credential_stamp(user), expires_at=expires_at)


def viewer_for(user: User) -> Viewer:
    """What this user may read: everything for admins (or when progress is public), else their own,
    and the operations dashboard's topic if the admin shows them the dashboard (sees_operations)."""
    granted = frozenset({DASHBOARD_TOPIC}) if sees_operations(user) else frozenset()
    return Viewer(sees_all=bool(user.is_admin) or conf.public(), user_id=int(user.pk), system_topics=granted)


def _from_token(raw: str) -> Access:
    auth = JWTAuthentication()
    try:
        validated = auth.get_validated_token(raw.encode())
        user = auth.get_user(validated)
    except (InvalidToken, TokenError):
        return Access(None, 401, "The token is invalid or expired.")
    except AuthenticationFailed:  # the token's user is gone or inactive (simplejwt's detail is a dict)
        return Access(None, 403, "This account may not read progress.")
    if not isinstance(user, User) or not user.is_active:
        return Access(None, 403, "This account may not read progress.")
    expires = validated.get("exp")
    return _granted(user, float(expires) if isinstance(expires, int | float) else None)


async def access_for(*, session_user: Any, token: str | None) -> Access:
    """Authenticate by token when one is given, else by the session; anonymous only if public."""
    if token:
        return await db_call(_from_token)(token)
    if isinstance(session_user, User) and session_user.is_authenticated:
        if not session_user.is_active:
            return Access(None, 403, "This account may not read progress.")
        return await db_call(_granted)(session_user)
    if conf.public():
        return Access(Viewer(sees_all=True))
    return Access(None, 401, "Log in, or pass a user JWT as ?token= or Authorization: Bearer.")
