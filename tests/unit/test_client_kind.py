"""The client kind rules, the SDK release read off a user agent, and what the SDK declares."""

from __future__ import annotations

import pytest

from graphql_api.client import declared_kind
from graphql_api.client_kind import HEADER, client_version, decide
from graphql_api.documents import ClientKind


def test_a_token_kind_beats_any_claim_or_user_agent() -> None:
    """A token created with a kind decides, whatever the header claims or the user agent says."""
    assert decide(ClientKind.CI, {HEADER: "HUMAN"}, "Googlebot/2.1") == (ClientKind.CI, "token")


@pytest.mark.parametrize(
    ("header", "agent", "want"),
    [
        ("CI", "modelhub-sdk/0.2", (ClientKind.CI, "header")),
        ("human", None, (ClientKind.HUMAN, "header")),
        ("HUMAN", "Googlebot/2.1", (ClientKind.HUMAN, "header")),
        ("BOT", "curl/8.5.0", (ClientKind.UNKNOWN, "default")),  # BOT is never a claim
        ("UNKNOWN", None, (ClientKind.UNKNOWN, "default")),
        (None, "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", (ClientKind.BOT, "user-agent")),
        (None, "Mozilla/5.0 (compatible; bingbot/2.0)", (ClientKind.BOT, "user-agent")),
        (None, "Baiduspider+(+http://www.baidu.com/search/spider.htm)", (ClientKind.BOT, "user-agent")),
        (None, "ia_archiver crawler", (ClientKind.BOT, "user-agent")),
        (None, "curl/8.5.0", (ClientKind.UNKNOWN, "default")),
        (None, "Wget/1.21.4", (ClientKind.UNKNOWN, "default")),
        (None, "python-httpx/0.27.0", (ClientKind.UNKNOWN, "default")),
        (None, "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0", (ClientKind.UNKNOWN, "default")),
        (None, None, (ClientKind.UNKNOWN, "default")),
    ],
)  # fmt: skip
def test_header_claims_then_bot_agents_then_unknown(
    header: str | None, agent: str | None, want: tuple[ClientKind, str]
) -> None:
    """Without a token kind: a CI or HUMAN claim decides, then a bot user agent, else UNKNOWN."""
    headers = {HEADER: header} if header is not None else {}
    assert decide(None, headers, agent) == want


@pytest.mark.parametrize(
    ("agent", "want"),
    [
        ("modelhub-sdk/0.2", "0.2"),
        ("modelhub-sdk/1.4.0 python-httpx/0.27", "1.4.0"),
        ("x modelhub-sdk/2.0.0rc1", "2.0.0rc1"),
        ("modelhub-sdk/1.4.0-" + "a" * 300, None),
        ("modelhub-sdk/latest", None),
        ("modelhub-sdk/1.2.3.4.5", None),
        ("notmodelhub-sdk/1.0", None),
        ("curl/8.5.0", None),
        (None, None),
    ],
)
def test_client_version_is_a_bounded_sdk_release_or_none(agent: str | None, want: str | None) -> None:
    """Only a well-formed `modelhub-sdk/<version>` gives a version; anything else is None (not the SDK)."""
    assert client_version(agent) == want


@pytest.mark.parametrize(
    ("environ", "terminal", "want"),
    [
        ({"GITHUB_ACTIONS": "true"}, True, "CI"),
        ({"CI": "1"}, False, "CI"),
        ({"JENKINS_URL": "http://jenkins"}, False, "CI"),
        ({"MODELHUB_CI": "1"}, True, "CI"),
        ({"CI": "false"}, True, "HUMAN"),
        ({}, True, "HUMAN"),
        ({}, False, None),
    ],
)
def test_the_sdk_declares_ci_from_the_environment_and_human_on_a_terminal(
    environ: dict[str, str], terminal: bool, want: str | None
) -> None:
    """A set CI variable (or --ci's MODELHUB_CI) declares CI, a terminal HUMAN, else nothing."""
    assert declared_kind(environ, terminal) == want


def test_the_live_feed_filters_by_client_kind() -> None:
    """The `downloadEvents` feed's matcher keeps exactly the events of the asked kinds."""
    from bson import ObjectId

    from graphql_api.analytics.feed_items import matcher
    from graphql_api.documents import DownloadEvent, DownloadMode
    from graphql_api.queries import EventQuery

    def event(kind: ClientKind) -> DownloadEvent:
        return DownloadEvent.model_construct(
            model_id=ObjectId(), model_name="m", model_version=1, project_name="p", size_bytes=1,
            engineer="e", mode=DownloadMode.STREAM, client_kind=kind,
        )  # fmt: skip

    matches = matcher(EventQuery(client_kinds=[ClientKind.CI, ClientKind.BOT]))
    assert [k for k in ClientKind if matches(event(k))] == [ClientKind.CI, ClientKind.BOT]
