"""Rate limits for the endpoints that check credentials: DRF's throttles, counted in Django's cache.

The cache is shared by every web process (Redis when `REDIS_URL` is set, the database cache on the
embedded default), so the limits hold however many processes serve. Two limits apply together: per
client address, and per account named in the request (an attacker spreading over many addresses
still meets the second). Rates come from `settings.CREDENTIAL_RATES`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle

AccountOf = Callable[[Any], object]


class CredentialAddressThrottle(SimpleRateThrottle):
    """Credential attempts per client address."""

    scope = "credentials_per_address"

    def get_rate(self) -> str:
        return str(settings.CREDENTIAL_RATES[self.scope])

    def get_cache_key(self, request: Any, view: Any) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class CredentialAccountThrottle(SimpleRateThrottle):
    """Credential attempts per account the request names (`view.credential_account(request)`)."""

    scope = "credentials_per_account"

    def get_rate(self) -> str:
        return str(settings.CREDENTIAL_RATES[self.scope])

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        account_of: AccountOf | None = getattr(view, "credential_account", None)
        account = account_of(request) if account_of is not None else None
        if not isinstance(account, str | int) or isinstance(account, bool) or not str(account).strip():
            return None
        digest = hashlib.sha256(str(account).strip().lower().encode()).hexdigest()[:32]
        return self.cache_format % {"scope": self.scope, "ident": digest}


CREDENTIAL_THROTTLES = [CredentialAddressThrottle, CredentialAccountThrottle]


class AnonymousJobThrottle(SimpleRateThrottle):
    """Job submissions that carry no credentials, per client address (`settings.ANONYMOUS_JOB_RATE`):
    pytasks lets anyone run its computational jobs, not flood the queue."""

    scope = "anonymous_jobs"

    def get_rate(self) -> str:
        return str(settings.ANONYMOUS_JOB_RATE)

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        if request.headers.get("Authorization"):
            return None  # a token's holder: its rights are checked by the job's own rules
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


def body_field(name: str) -> AccountOf:
    """`credential_account` for a view whose JSON body names the account in `name`."""

    def account(request: Any) -> object:
        # A body that does not parse raises here, as the view itself would (its dialect's 400).
        data = request.data
        return data.get(name) if isinstance(data, dict) else None

    return account


def first_refusal(request: Any, view: Any) -> float | None:
    """For credential checks outside DRF's view flow (the admin login, farm Basic passwords): count
    this attempt against both limits; the seconds to wait when one refuses it, else None."""
    for throttle_class in CREDENTIAL_THROTTLES:
        throttle = throttle_class()
        if not throttle.allow_request(request, view):
            return throttle.wait() or 1.0
    return None


def throttle_wait(view: Any, request: Any) -> float | None:
    """The seconds `view`'s throttles would make this request wait, looked up without counting it
    (the front door's admission question: the request itself is counted when it comes); None: none."""
    waits: list[float] = []
    for throttle in view.get_throttles():
        if not isinstance(throttle, SimpleRateThrottle) or throttle.rate is None:
            continue
        key = throttle.get_cache_key(request, view)
        if key is None:
            continue
        allowed, duration = throttle.parse_rate(throttle.rate)
        if allowed is None or duration is None:
            continue
        throttle.key, throttle.now = key, throttle.timer()
        throttle.history = [at for at in throttle.cache.get(key, []) if at > throttle.now - duration]
        if len(throttle.history) >= allowed:
            waits.append(throttle.wait() or 1.0)
    return max(waits) if waits else None
