"""Where a webhook may be delivered: http(s) URLs whose every address is public, or whose host is allowed."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_URL_CHARS = 2048


class UnsafeTarget(Exception):
    """The URL is malformed, or it reaches an address webhooks may not call; the message says which."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str  # with its query string

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        name = f"[{self.host}]" if ":" in self.host else self.host
        return name if self.port == default else f"{name}:{self.port}"

    def url_for(self, address: IPAddress) -> str:
        """The URL with `address` for its host: the connection goes to the address that was checked."""
        host = f"[{address}]" if address.version == 6 else str(address)
        return f"{self.scheme}://{host}:{self.port}{self.path}"


def parse(url: str) -> Target:
    if len(url) > MAX_URL_CHARS:
        raise UnsafeTarget(f"must be at most {MAX_URL_CHARS} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeTarget("is not a valid URL") from exc
    if parts.scheme not in ("http", "https"):
        raise UnsafeTarget("must be an http or https URL")
    if not parts.hostname:
        raise UnsafeTarget("must name a host")
    if parts.username is not None or parts.password is not None:
        raise UnsafeTarget("must not carry credentials")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(
        parts.scheme, parts.hostname.lower(), port or (443 if parts.scheme == "https" else 80), path
    )


def forbidden(address: IPAddress) -> bool:
    """Loopback, link-local (cloud metadata), private, shared, multicast, reserved or unspecified: anything
    not globally routable, including IPv4 addresses wrapped in IPv6 (::ffff:127.0.0.1, 64:ff9b::/96...)."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = address.ipv4_mapped or address.sixtofour
        if inner is not None:
            return forbidden(inner)
    return not address.is_global or address.is_multicast


async def resolve(target: Target, allowed: Iterable[str]) -> list[IPAddress]:
    """Every address of the target's host, all checked; an allowed host skips the check. The caller must
    connect to one of these addresses (not resolve again), or DNS could answer differently the second time."""
    try:
        literal: IPAddress | None = ipaddress.ip_address(target.host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise UnsafeTarget(f"host {target.host!r} does not resolve") from exc
        addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
    if target.host in {h.lower() for h in allowed}:
        return addresses
    bad = [a for a in addresses if forbidden(a)]
    if bad:
        raise UnsafeTarget(
            f"host {target.host!r} resolves to {bad[0]}, a loopback, link-local or private address "
            "(list the host in MODELHUB_WEBHOOK_ALLOWED_HOSTS to allow it)"
        )
    return addresses
