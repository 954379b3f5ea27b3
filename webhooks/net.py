"""Where a webhook may send: http(s) URLs whose host resolves only to public addresses (unless
WEBHOOKS_ALLOW_PRIVATE), and a POST that connects to exactly the address that was checked, so a
host name that resolves differently the second time (DNS rebinding) cannot reach an internal
service. Redirects are not followed (http.client never follows them)."""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

from webhooks.errors import WebhookUrlError

TIMEOUT_SECONDS = 10.0
# What is kept of a receiver's answer (the delivery log shows it).
ANSWER_KEEP_BYTES = 2000


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str
    addresses: tuple[str, ...]


# IPv6 prefixes that carry an IPv4 address in their last 32 bits, which a gateway (NAT64) or the
# kernel may reach: IPv4-compatible, IPv4-mapped, IPv4-translated, and NAT64's two prefixes.
_EMBEDDING_IPV4 = tuple(
    ipaddress.IPv6Network(prefix) for prefix in ("::/96", "::ffff:0:0/96", "::ffff:0:0:0/96", "64:ff9b::/96")
)
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address leads to through a transition mechanism (none: a plain one)."""
    found = [v4 for v4 in (ip.sixtofour, *(ip.teredo or ())) if v4 is not None]
    if any(ip in network for network in _EMBEDDING_IPV4) or ip in _NAT64_LOCAL:
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def address_allowed(address: str) -> bool:
    """True for a public (globally routable) address; loopback, private, link-local, shared,
    reserved, multicast and unspecified addresses are not, nor IPv6 addresses that lead to such an
    IPv4 address (IPv4-mapped or -compatible, NAT64, 6to4, Teredo), nor deprecated site-local ones."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and (
        ip.is_site_local or not all(address_allowed(str(v4)) for v4 in _embedded_ipv4(ip))
    ):
        return False
    return ip.is_global and not ip.is_multicast


def resolve(url: str) -> Target:
    """Check `url` and resolve its host; raises WebhookUrlError when it may not be used."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise WebhookUrlError(f"Not a valid URL: {exc}.", extra={"fields": {"url": ["invalid"]}}) from exc
    if parts.scheme not in ("http", "https"):
        raise WebhookUrlError("Only http and https URLs are accepted.", extra={"fields": {"url": ["scheme"]}})
    if not parts.hostname:
        raise WebhookUrlError("The URL has no host.", extra={"fields": {"url": ["host"]}})
    if parts.username or parts.password:
        raise WebhookUrlError("Credentials in the URL are not accepted.", extra={"fields": {"url": ["userinfo"]}})
    port = port or (443 if parts.scheme == "https" else 80)
    # One answer for a name that does not resolve and one that resolves to an internal address,
    # without the address: otherwise any signed-in user could read the internal DNS through it.
    refusal = WebhookUrlError(
        f"The host {parts.hostname!r} is unknown or not public: webhooks may reach public hosts only.",
        extra={"fields": {"url": ["not_public"]}},
    )
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise refusal from exc
    addresses = tuple(dict.fromkeys(str(info[4][0]) for info in infos))
    if not settings.WEBHOOKS_ALLOW_PRIVATE and not all(address_allowed(address) for address in addresses):
        raise refusal
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(scheme=parts.scheme, host=parts.hostname, port=port, path=path, addresses=addresses)


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, target: Target, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self._address = target.addresses[0]

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, target: Target, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout, context=ssl.create_default_context())
        self._address = target.addresses[0]

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        # The certificate is checked against the host name, as for any https request.
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Answer:
    status: int
    body: str
    duration_ms: int


def post(target: Target, body: bytes, headers: dict[str, str], *, timeout: float = TIMEOUT_SECONDS) -> Answer:
    """POST `body` to the checked address of `target`; raises OSError (or http.client's errors)."""
    connection: http.client.HTTPConnection = (
        _PinnedHTTPSConnection(target, timeout) if target.scheme == "https" else _PinnedHTTPConnection(target, timeout)
    )
    started = time.monotonic()
    try:
        connection.request("POST", target.path, body=body, headers=headers)
        response = connection.getresponse()
        text = response.read(ANSWER_KEEP_BYTES).decode("utf-8", "replace")
        return Answer(status=response.status, body=text, duration_ms=int((time.monotonic() - started) * 1000))
    finally:
        connection.close()
