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


# Refused whatever this Python's ipaddress tables say (they differ across versions: 3.11 calls the first
# four global). 64:ff9b::/96 (well-known NAT64), ::ffff:0:0/96 (IPv4-mapped) and 2002::/16 (6to4) are
# judged by the IPv4 address they carry instead.
_REFUSED = tuple(
    ipaddress.ip_network(n)
    for n in (
        "64:ff9b:1::/48",  # local-use NAT64 (RFC 8215): whatever the operator translates it to
        "::/96",  # IPv4-compatible (deprecated): ::7f00:1 is 127.0.0.1 on some stacks
        "fec0::/10",  # site-local (deprecated)
        "3fff::/20",  # documentation (RFC 9637)
        "2001::/32",  # Teredo: tunnels to an IPv4 address
        "2001:db8::/32",  # documentation
        "192.0.0.0/24",  # IETF protocol assignments
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address a well-known NAT64 (64:ff9b::/96), IPv4-mapped or 6to4 address reaches."""
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.ipv4_mapped or address.sixtofour


def forbidden(address: IPAddress) -> bool:
    """Loopback, link-local (cloud metadata), private, shared, multicast, reserved, site-local, unspecified,
    documentation, Teredo, local-use NAT64 or IPv4-compatible: anything not globally routable. An IPv4
    address carried in IPv6 (64:ff9b::7f00:1, ::ffff:127.0.0.1, 2002:7f00:1::) is judged by that IPv4."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = embedded_ipv4(address)
        if inner is not None:
            return forbidden(inner)
    # Not global covers loopback, link-local, private and unspecified in every Python version.
    return (
        any(address in network for network in _REFUSED)
        or not address.is_global
        or address.is_multicast
        or address.is_reserved
    )


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
        except (OSError, UnicodeError) as exc:  # UnicodeError: a label IDNA refuses (empty, over 63)
            raise UnsafeTarget(f"host {target.host!r} does not resolve") from exc
        addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
    if target.host in {h.lower() for h in allowed}:
        return addresses
    bad = [a for a in addresses if forbidden(a)]
    if bad:
        raise UnsafeTarget(
            # The address itself is not said: an answer would tell a caller what an internal name resolves to.
            f"host {target.host!r} resolves to a loopback, link-local, private or reserved address "
            "(list the host in MODELHUB_WEBHOOK_ALLOWED_HOSTS to allow it)"
        )
    return addresses
