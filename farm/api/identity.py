"""Which worker sent a request: the rule the views and the WSGI fast path share.

The seed's protocol names the worker only in the claim's body; its PUTs carry no worker id. To
refuse a late PUT from a worker that lost its lease (409), the server must still tell workers apart.
In order, a request is from:

1. the worker named by an `X-Farm-Worker` header (scripts that say it);
2. the worker named by the `farm_worker` cookie (set by the server, kept by `requests.Session`);
3. the worker registered with the request's farm token (`Worker.token_id`): `taskfarm-worker`
   fetches a token of its own for each worker, so the token alone names it.

The cookie is set only where the token does not already name the worker: a shared token's later
workers, tokens issued without an id. Each `taskfarm-worker` therefore never holds a cookie, which
spares its `requests` session the cookie jar's work on each of the four requests of every task
(measured at 0.15 to 0.25 ms of client CPU per request; docs/farm.md, "Leases").
"""

from __future__ import annotations

from farm import selectors
from farm.authentication import FarmToken


def token_worker(token: object, *, fresh: bool = False) -> str | None:
    """The uuid of the worker registered with this farm token, if one is (`fresh`: read from the
    database, not this process's cache)."""
    if isinstance(token, FarmToken) and token.token_id is not None:
        return selectors.worker_uuid_for_token(token.token_id, cached=not fresh)
    return None


def sending_worker(*, header: str | None, cookie: str | None, token: object, fresh: bool = False) -> str | None:
    """The uuid of the worker that sent the request, or None when nothing names one. `fresh` for a
    decision that refuses the request (a 409): the token's binding is then read afresh."""
    return header or cookie or token_worker(token, fresh=fresh)


def cookie_needed(worker_uuid: str, *, cookie: str | None, token: object) -> bool:
    """Whether an answer to `worker_uuid` must set its cookie: not when the request already carries
    it, nor when (with no cookie to override it) the token names that worker."""
    if cookie is not None:
        return cookie != worker_uuid
    return token_worker(token) != worker_uuid
