"""Which worker sent a request: the rule every farm view applies.

The seed's protocol names the worker only in the claim's body; its PUTs carry no worker id. To
refuse a late PUT from a worker that lost its lease (409), the server must still tell workers apart.
In order, a request is from:

1. the worker named by an `X-Farm-Worker` header (scripts that say it);
2. the worker named by the `farm_worker` cookie (set by the server, kept by `requests.Session`);
3. the worker registered with the request's farm token (`Worker.token_id`), when exactly one worker
   registered with it: `taskfarm-worker` fetches a token of its own for each worker, so the token
   alone names it. A token several workers registered with names any of them: a PUT carrying
   only that token is refused only when the task's holder is none of them (a cookie-less script
   running two workers on one token gets the seed's behaviour for its own workers, as before).

A worker's token names it for everyone holding that token: a script that fixes tasks up should use
a token of its own, or the password. The cookie is set only where the token does not name the
worker: workers sharing a token, password logins. Each
`taskfarm-worker` therefore never holds a cookie, which
spares its `requests` session the cookie jar's work on each of the four requests of every task
(measured at 0.15 to 0.25 ms of client CPU per request; docs/farm.md, "Leases").
"""

from __future__ import annotations

from farm import selectors
from farm.authentication import FarmToken


def token_id_of(token: object) -> str | None:
    """The id of a verified farm token (DRF's `request.auth`), else None."""
    return token.token_id if isinstance(token, FarmToken) else None


def token_worker(token: object) -> str | None:
    """The uuid of the one worker registered with this farm token, if exactly one is (cached)."""
    token_id = token_id_of(token)
    return selectors.worker_uuid_for_token(token_id) if token_id is not None else None


def sending_worker(*, header: str | None, cookie: str | None, token: object) -> str | None:
    """The uuid of the worker that sent the request, or None when nothing names exactly one (the
    hot path: a guarded write that changes nothing unless this worker holds the task)."""
    return header or cookie or token_worker(token)


def possible_senders(*, header: str | None, cookie: str | None, token: object) -> frozenset[str]:
    """The workers the request may come from, read afresh, for a decision that may refuse it (409):
    the one a header or cookie names, else every worker registered with its token (none: the
    request names no worker, and is applied as the seed applies it)."""
    named = header or cookie
    if named:
        return frozenset((named,))
    token_id = token_id_of(token)
    return selectors.workers_for_token(token_id) if token_id is not None else frozenset()


def cookie_needed(worker_uuid: str, *, cookie: str | None, token: object) -> bool:
    """Whether an answer to `worker_uuid` must set its cookie: not when the request already carries
    it, nor when (with no cookie to override it) the token names that worker."""
    if cookie is not None:
        return cookie != worker_uuid
    return token_worker(token) != worker_uuid
