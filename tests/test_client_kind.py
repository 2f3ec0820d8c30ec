"""Client kinds end to end: a token's kind, the SDK's claim and bot user agents recorded on download events,
and the `clientKinds` filter of the downloads list."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from graphql_api.client import SDK_VERSION, ModelhubClient
from graphql_api.config import Settings
from tests.servers import LiveServer, SharedApps, Stores
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
def token_settings(mongo_uri: str, clean_db: str, shared_apps: SharedApps) -> Settings:
    return shared_apps.settings_for("local", mongo_uri, None, clean_db, auth="token")


@pytest.fixture
async def world(token_settings: Settings, bucket: str, shared_apps: SharedApps) -> AsyncIterator[World]:
    async for w in token_app(token_settings, Stores("local", token_settings), bucket, shared_apps):
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


VERIFY = """mutation($d: ID!, $m: Boolean!) {
  reportDownloadVerification(input: {download: $d, sha256Matches: $m}) {
    __typename ... on DownloadEvent { sha256Matches } ... on UserError { code message }
  }
}"""
FIGURES = "{ downloadStats(groupBy: [], exact: %s) { source rows { downloads verified mismatched } } }"


async def test_verification_is_reported_once_by_its_own_principal_and_counted(world: World) -> None:
    """The downloader reports its verdict once (a second report is INVALID_INPUT, another principal's is
    FORBIDDEN); `verified` and `mismatched` count them, from raw events and from rollups alike."""
    good, bad = [(await download(world, "reader"))["id"] for _ in range(2)]
    await download(world, "reader")  # never reported
    done = await world.gql("reader", VERIFY, {"d": good, "m": True})
    assert done["data"]["reportDownloadVerification"] == {
        "__typename": "DownloadEvent",
        "sha256Matches": True,
    }
    other = await world.gql("engineer", VERIFY, {"d": bad, "m": True})
    assert other["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert (await world.gql("reader", VERIFY, {"d": bad, "m": False}))["data"]["reportDownloadVerification"][
        "sha256Matches"
    ] is False
    again = (await world.gql("reader", VERIFY, {"d": good, "m": False}))["data"]["reportDownloadVerification"]
    assert again["code"] == "INVALID_INPUT" and "already reported" in again["message"]
    for exact, source in (("true", "RAW"), ("false", "ROLLUP")):
        stats = (await world.gql("reader", FIGURES % exact))["data"]["downloadStats"]
        assert stats["source"] == source
        assert stats["rows"] == [{"downloads": 3, "verified": 1, "mismatched": 1}], exact


@pytest.mark.parametrize("store_kind", ["local"])
def test_the_sdk_reports_its_verification_and_declares_ci(
    live: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A download by the SDK in a CI job is recorded CI (rule header) with the SDK's release, and its
    SHA-256 check is reported as verified."""
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    src = tmp_path / "m.bin"
    src.write_bytes(os.urandom(4096))
    with ModelhubClient(live.url, engineer="sdk") as client:
        client.push(src, "k", "p")
        deadline = time.monotonic() + 20
        while client.info("k").checksum_status != "VERIFIED" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.download("k", tmp_path / "out.bin").verified
        query = "{ downloads { nodes { clientKind clientKindRule clientVersion sha256Matches } } }"
        assert client.graphql(query)["downloads"]["nodes"] == [
            {
                "clientKind": "CI",
                "clientKindRule": "header",
                "clientVersion": SDK_VERSION,
                "sha256Matches": True,
            }
        ]
