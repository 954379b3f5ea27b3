"""Which worker sent a request.

The seed's protocol names the worker only in the claim's body; its PUTs carry no worker id. To
refuse a late PUT from a worker whose lease lapsed and whose task went to another worker (409), a
request names its worker by, in order:

1. an `X-Farm-Worker` header (scripts that say it), or
2. the `farm_worker` cookie, which the server sets on registration and on every hand-out that
   names a worker the request's cookie does not (`requests.Session`, as `taskfarm-worker` uses,
   keeps it).

A request that names no worker (a script without a session, an operator's fix-up) is applied as
the seed applies it.
"""

from __future__ import annotations

from rest_framework.request import Request
from rest_framework.response import Response

from farm.conf import WORKER_COOKIE

HEADER = "X-Farm-Worker"


def sending_worker(request: Request) -> str | None:
    """The uuid of the worker the request names, if any."""
    return request.headers.get(HEADER) or request.COOKIES.get(WORKER_COOKIE) or None


def remember_worker(response: Response, request: Request, worker_uuid: str) -> Response:
    """Set the cookie that names `worker_uuid` on its later requests (unless they already do)."""
    if request.COOKIES.get(WORKER_COOKIE) != worker_uuid:
        response.set_cookie(WORKER_COOKIE, worker_uuid, httponly=True, samesite="Lax")
    return response
