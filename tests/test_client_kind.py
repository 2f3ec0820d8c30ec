"""Client kinds end to end: a token's kind, the SDK's claim and bot user agents recorded on download events,
and the `clientKinds` filter of the downloads list."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from graphql_api.config import Settings
from tests.servers import Stores, make_settings
from tests.test_security import World, token_app

DOWNLOAD = """mutation {
  requestDownload(input: {name: "m"}) {
    ... on DownloadTicket { download { id clientKind clientKindRule clientVersion } }
  }
}"""
CREATE = """mutation($n: String!, $k: ClientKind) {
  createToken(input: {name: $n, principal: "ci-bot", role: READER, kind: $k}) {
    ... on CreatedToken { token apiToken { kind } }
  }
}"""


@pytest.fixture
def token_settings(mongo_uri: str, tmp_path: Path) -> Settings:
    return make_settings("local", mongo_uri, None, tmp_path / "data", auth="token")


@pytest.fixture
async def world(token_settings: Settings, bucket: str) -> AsyncIterator[World]:
    async for w in token_app(token_settings, Stores("local", token_settings), bucket):
        yield w


async def download(world: World, who: str, **headers: str) -> dict[str, Any]:
    body = await world.gql(who, DOWNLOAD, **headers)
    assert not body.get("errors"), body
    found: dict[str, Any] = body["data"]["requestDownload"]["download"]
    return found


async def test_each_rule_is_recorded_on_the_event(world: World) -> None:
    """A CI token's downloads are CI (rule token) whatever they claim; otherwise the header claim, then a bot
    user agent, else UNKNOWN; the SDK release comes from the user agent."""
    made = (await world.gql("admin", CREATE, {"n": "t-ci", "k": "CI"}))["data"]["createToken"]
    assert made["apiToken"]["kind"] == "CI"
    world.tokens["ci"] = made["token"]
    claims = {"X-Modelhub-Client-Kind": "HUMAN", "User-Agent": "modelhub-sdk/1.4.0"}
    got = await download(world, "ci", **claims)
    assert (got["clientKind"], got["clientKindRule"], got["clientVersion"]) == ("CI", "token", "1.4.0")
    got = await download(world, "reader", **claims)
    assert (got["clientKind"], got["clientKindRule"]) == ("HUMAN", "header")
    got = await download(world, "reader", **{"User-Agent": "Mozilla/5.0 (compatible; Googlebot/2.1)"})
    assert (got["clientKind"], got["clientKindRule"], got["clientVersion"]) == ("BOT", "user-agent", None)
    got = await download(world, "reader", **{"User-Agent": "curl/8.5.0"})
    assert (got["clientKind"], got["clientKindRule"]) == ("UNKNOWN", "default")


async def test_the_downloads_list_filters_by_client_kind(world: World) -> None:
    """`downloads(filter: {clientKinds})` lists exactly the events of those kinds."""
    await download(world, "reader", **{"X-Modelhub-Client-Kind": "CI"})
    await download(world, "reader", **{"X-Modelhub-Client-Kind": "HUMAN"})
    await download(world, "reader", **{"User-Agent": "curl/8.5.0"})
    query = "query($k: [ClientKind!]) { downloads(filter: {clientKinds: $k}) { nodes { clientKind } } }"
    for kinds, want in ((["CI"], ["CI"]), (["HUMAN", "UNKNOWN"], ["HUMAN", "UNKNOWN"]), (["BOT"], [])):
        body = await world.gql("reader", query, {"k": kinds})
        got = sorted(n["clientKind"] for n in body["data"]["downloads"]["nodes"])
        assert got == want, (kinds, body)
