"""Webhook rules without a server: which addresses are refused, backoff and Retry-After, who may manage a
webhook and what it may deliver."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest

from graphql_api import targets, webhooks
from graphql_api.auth import Principal
from graphql_api.roles import ProjectRole, Role
from graphql_api.webhook_post import backoff, retry_after


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("127.0.0.1", True), ("10.0.0.1", True), ("172.16.0.1", True), ("192.168.1.1", True),
        ("169.254.169.254", True), ("100.64.0.1", True), ("0.0.0.0", True), ("224.0.0.1", True),
        ("::1", True), ("fe80::1", True), ("fc00::1", True), ("::ffff:10.0.0.1", True), ("2002:7f00:1::", True),
        ("64:ff9b::7f00:1", True), ("64:ff9b::a9fe:a9fe", True), ("64:ff9b:1::808:808", True),
        ("2001::1", True), ("2001:0:4136:e378:8000:63bf:3fff:fdd2", True), ("::7f00:1", True),
        ("::808:808", True), ("fec0::1", True), ("::ffff:0:7f00:1", True), ("2001:db8::1", True),
        ("3fff::1", True), ("100::1", True), ("ff0e::1", True), ("192.0.0.9", True), ("198.18.0.1", True),
        ("240.0.0.1", True), ("::ffff:127.0.0.1", True),
        ("8.8.8.8", False), ("2606:4700:4700::1111", False), ("64:ff9b::808:808", False),
        ("::ffff:8.8.8.8", False), ("2002:808:808::1", False),
    ],
)  # fmt: skip
def test_forbidden_addresses(address: str, refused: bool) -> None:
    """Every non-global address is refused: NAT64 (64:ff9b::/96), IPv4-mapped and 6to4 addresses by the
    IPv4 address they carry, local-use NAT64, Teredo, IPv4-compatible, site-local and every other reserved
    range outright; public ones (also carried in NAT64, mapped or 6to4 form) are not."""
    assert targets.forbidden(ipaddress.ip_address(address)) is refused


async def test_allowed_hosts_and_literals() -> None:
    """An allowed host skips the check; a literal public address needs no lookup; names are resolved."""
    assert await targets.resolve(targets.parse("http://127.0.0.1:9/x"), ["127.0.0.1"])
    assert await targets.resolve(targets.parse("https://8.8.8.8/x"), [])
    with pytest.raises(targets.UnsafeTarget, match="does not resolve"):
        await targets.resolve(targets.parse(f"http://{'a' * 70}.com/x"), [])  # a label over 63 characters
    with pytest.raises(targets.UnsafeTarget, match="loopback") as refused:
        await targets.resolve(targets.parse("http://localhost/x"), ["127.0.0.1"])
    assert "127.0.0.1" not in str(refused.value) and "::1" not in str(refused.value)  # no DNS answer told


def test_target_keeps_host_for_the_checked_address() -> None:
    """The request goes to the checked address, with the original Host header."""
    target = targets.parse("https://Example.com:8443/a?b=1")
    assert target.url_for(ipaddress.ip_address("93.184.216.34")) == "https://93.184.216.34:8443/a?b=1"
    assert target.host_header == "example.com:8443"
    assert targets.parse("http://[2606:4700::1]/").host_header == "[2606:4700::1]"


def test_backoff_grows_with_jitter_up_to_its_cap() -> None:
    """Each wait lies in the upper half of initial * 2^(attempts-1), capped."""
    for attempts, top in ((1, 5.0), (2, 10.0), (5, 80.0), (30, 3600.0)):
        delay = backoff(attempts, 5.0, 3600.0)
        assert top / 2 <= delay <= top


def test_retry_after_in_seconds_or_a_date() -> None:
    """Retry-After as delta-seconds or an HTTP date; nonsense is ignored."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert retry_after("120", now) == 120.0
    later = (now + timedelta(seconds=30)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert retry_after(later, now) == 30.0
    assert retry_after("soon", now) is None and retry_after(None, now) is None


def test_who_may_manage_a_webhook() -> None:
    """An ADMIN manages any webhook; a MAINTAINER only one limited to projects it maintains, all of them."""
    admin = Principal("root", Role.ADMIN)
    lead = Principal("lead", None, grants={"A": ProjectRole.MAINTAINER, "B": ProjectRole.ENGINEER})
    reader = Principal("auditor", Role.READER)
    assert webhooks.may_manage_webhooks(admin, []) and webhooks.may_manage_webhooks(admin, ["B"])
    assert webhooks.may_manage_webhooks(lead, ["A"])
    assert not webhooks.may_manage_webhooks(lead, [])  # every project
    assert not webhooks.may_manage_webhooks(lead, ["A", "B"])
    assert not webhooks.may_manage_webhooks(reader, ["A"])


def test_a_webhook_delivers_only_what_its_creator_reads() -> None:
    """A creator with a global role is sent every project's events; a MAINTAINER's webhook only those of the
    projects its filter names."""
    assert webhooks.may_read("ADMIN", [], "anything")
    assert webhooks.may_read(webhooks.NO_GLOBAL_ROLE, ["A"], "A")
    assert not webhooks.may_read(webhooks.NO_GLOBAL_ROLE, ["A"], "B")
    assert not webhooks.may_read(webhooks.NO_GLOBAL_ROLE, [], "B")
