"""The hostile-input pass of CI's fuzzing: a fixed corpus of payloads that once made the platform
answer 500 (issue 15, section 4), sent to every operation of the OpenAPI schema as every identity.

`hostile_pass(base, identities)` returns the failures: any 5xx, and any request the server did not
answer within the timeout. The caller also fails the run on any traceback in the server's log.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import requests

TIMEOUT = 20
HUGE_INTEGER = "9" * 5000  # past Python's 4,300-digit limit for int()
NUL = "%00"
SURROGATE = "%ED%A0%80"  # a lone UTF-16 surrogate, encoded as UTF-8 would (never valid)
BODY_LIMIT = 10 * 1024 * 1024  # DATA_UPLOAD_MAX_MEMORY_SIZE's default

# JSON bodies, each sent as application/json to every operation that takes a body.
BODIES: dict[str, bytes] = {
    "nested 1000 deep": b"[" * 1000 + b"]" * 1000,
    "nested objects": b'{"a":' * 1000 + b"1" + b"}" * 1000,
    "NaN": b'{"numTasks": NaN, "count": NaN, "percentCompleted": NaN, "x": NaN}',
    "Infinity": b'{"numTasks": Infinity, "pid": -Infinity, "args": {"x": Infinity}}',
    "1e999": b'{"numTasks": 1e999, "count": 1e999, "device_id": 1e999, "args": {"x": 1e999}}',
    "lone surrogate": b'{"name": "\\ud800", "email": "\\udfff@x", "type": "\\ud800", "uuid": "\\ud800"}',
    "NUL in strings": b'{"name": "a\\u0000b", "email": "a\\u0000@x", "type": "a\\u0000", "hostname": "\\u0000"}',
    "not JSON": b"\xff\xfe{",
}


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # with its parameters filled in


def _filled(path: str, value: str) -> str:
    return re.sub(r"\{[^}]+\}", value, path)


def operations(schema: dict[str, object]) -> Iterator[tuple[str, str, bool]]:
    """(method, path template, takes a body) of every operation in the schema."""
    paths = schema.get("paths")
    assert isinstance(paths, dict)
    for path, item in paths.items():
        assert isinstance(item, dict)
        for method, operation in item.items():
            if method in ("get", "post", "put", "patch", "delete"):
                yield method.upper(), path, isinstance(operation, dict) and "requestBody" in operation


def _requests(base: str, schema: dict[str, object]) -> Iterator[tuple[str, str, str, bytes | None, dict[str, str]]]:
    """(label, method, url, body, extra headers) of the whole corpus."""
    for method, path, takes_body in operations(schema):
        templated = "{" in path
        values = [("huge integer in the path", HUGE_INTEGER), ("NUL in the path", NUL), ("surrogate", SURROGATE)]
        for label, value in values if templated else [("plain", "1")]:
            url = base + _filled(path, value)
            yield f"{label}", method, url, None, {}
        url = base + _filled(path, "1")
        query = f"?topic={NUL}&info={NUL}&q={NUL}&status__exact={NUL}&once={NUL}&lastEventId={HUGE_INTEGER}"
        yield "NUL in the query", method, url + query, None, {}
        if takes_body or method in ("POST", "PUT", "PATCH"):
            for label, body in BODIES.items():
                yield label, method, url, body, {"Content-Type": "application/json"}
            oversized = b'{"x": "' + b"a" * (BODY_LIMIT + 1) + b'"}'
            yield "body over the limit", method, url, oversized, {"Content-Type": "application/json"}


def hostile_pass(base: str, identities: list[tuple[str, dict[str, str], tuple[str, str] | None]]) -> list[str]:
    """Send the corpus as every identity: (name, headers, Basic credentials or None)."""
    schema = requests.get(
        f"{base}/schema/", headers={"Accept": "application/vnd.oai.openapi+json"}, timeout=TIMEOUT
    ).json()
    failures: list[str] = []
    sent = 0
    for name, headers, basic in identities:
        with requests.Session() as session:
            for label, method, url, body, extra in _requests(base, schema):
                if body is not None and len(body) > BODY_LIMIT and name not in ("anonymous", "user"):
                    continue  # the oversized body twice is enough
                try:
                    answer = session.request(
                        method, url, data=body, headers={**headers, **extra}, auth=basic, timeout=TIMEOUT
                    )
                except requests.RequestException as exc:
                    failures.append(f"{name}: {method} {url[:120]} ({label}): no answer: {type(exc).__name__}")
                    continue
                sent += 1
                if answer.status_code >= 500:
                    failures.append(f"{name}: {method} {url[:120]} ({label}): {answer.status_code}")
    print(f"[hostile] {sent} requests, {len(failures)} failures", flush=True)
    return failures
