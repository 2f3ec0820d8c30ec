"""Aliases: set, move, remove, their recorded history, and downloads by alias."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.servers import GraphQLClient, Stores

SET = """mutation($n: String!, $a: String!, $v: Int!) {
  setAlias(input: {name: $n, alias: $a, version: $v}) {
    __typename ... on Model { aliases { alias version } } ... on UserError { code message }
  }
}"""
REMOVE = """mutation($n: String!, $a: String!) {
  removeAlias(input: {name: $n, alias: $a}) {
    __typename ... on Model { aliases { alias version } } ... on UserError { code }
  }
}"""
HISTORY = (
    """{ model(name: "m") { aliasHistory { nodes { alias fromVersion toVersion changedBy changedAt } } } }"""
)
ALICE = {"X-Engineer-ID": "alice"}


async def three_versions(gql: GraphQLClient, stores: Stores, bucket: str) -> None:
    stores.put(bucket, "m.bin", b"weights")
    for _ in range(3):
        r = await gql(
            'mutation($b: String!) { registerModel(input: {name: "m", projectName: "p", bucket: $b, key: "m.bin"}) { __typename } }',
            {"b": bucket},
            **ALICE,
        )
        assert r["registerModel"]["__typename"] == "ModelVersion"


async def set_alias(gql: GraphQLClient, alias: str, version: int, **headers: str) -> dict[str, Any]:
    result: dict[str, Any] = (await gql(SET, {"n": "m", "a": alias, "v": version}, **(headers or ALICE)))[
        "setAlias"
    ]
    return result


async def test_set_move_remove_and_history(gql: GraphQLClient, stores: Stores, bucket: str) -> None:
    """An alias is set, moved and removed; each move is recorded with who, when, from and to."""
    await three_versions(gql, stores, bucket)
    assert (await set_alias(gql, "prod", 1))["aliases"] == [{"alias": "prod", "version": 1}]
    assert (await set_alias(gql, "prod", 3))["aliases"] == [{"alias": "prod", "version": 3}]
    assert (await set_alias(gql, "prod", 3))["aliases"] == [
        {"alias": "prod", "version": 3}
    ]  # no-op, no record
    version = await gql('{ modelVersion(name: "m", alias: "prod") { version aliases } }')
    assert version["modelVersion"] == {"version": 3, "aliases": ["prod"]}
    removed = (await gql(REMOVE, {"n": "m", "a": "prod"}, **ALICE))["removeAlias"]
    assert removed == {"__typename": "Model", "aliases": []}
    again = (await gql(REMOVE, {"n": "m", "a": "prod"}, **ALICE))["removeAlias"]
    assert again == {"__typename": "AliasNotFound", "code": "ALIAS_NOT_FOUND"}
    assert (await gql('{ modelVersion(name: "m", alias: "prod") { version } }'))["modelVersion"] is None
    history = (await gql(HISTORY))["model"]["aliasHistory"]["nodes"]
    assert [(h["fromVersion"], h["toVersion"], h["changedBy"]) for h in history] == [
        (3, None, "alice"),
        (1, 3, "alice"),
        (None, 1, "alice"),
    ]
    assert history[0]["changedAt"] >= history[1]["changedAt"] >= history[2]["changedAt"]


async def test_bad_aliases_are_refused(gql: GraphQLClient, stores: Stores, bucket: str) -> None:
    """All-digit or malformed aliases, missing or archived versions and other owners are refused."""
    await three_versions(gql, stores, bucket)
    for alias in ("123", "", "has space", "x" * 65):
        result = await set_alias(gql, alias, 1)
        assert result["__typename"] == "InvalidInput", (alias, result)
    assert (await set_alias(gql, "prod", 9))["__typename"] == "ModelVersionNotFound"
    await gql('mutation { archiveModelVersion(input: {name: "m", version: 2}) { __typename } }', **ALICE)
    assert (await set_alias(gql, "prod", 2))["__typename"] == "ModelVersionArchived"
    body = await gql.raw(SET, {"n": "m", "a": "prod", "v": 1}, **{"X-Engineer-ID": "mallory"})
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    missing = (await gql(SET, {"n": "nope", "a": "prod", "v": 1}, **ALICE))["setAlias"]
    assert missing["__typename"] == "ModelNotFound"


async def test_concurrent_moves_keep_a_consistent_history(
    gql: GraphQLClient, stores: Stores, bucket: str
) -> None:
    """20 concurrent moves of one alias: each recorded move starts where the previous one ended."""
    await three_versions(gql, stores, bucket)
    await asyncio.gather(*(set_alias(gql, "prod", 1 + i % 3) for i in range(20)))
    history = (await gql(HISTORY))["model"]["aliasHistory"]["nodes"]
    chain = list(reversed(history))
    assert chain[0]["fromVersion"] is None
    for before, after in itertools.pairwise(chain):
        assert after["fromVersion"] == before["toVersion"]
    final = (await gql('{ model(name: "m") { aliases { version } } }'))["model"]["aliases"][0]["version"]
    assert chain[-1]["toVersion"] == final


async def test_download_by_alias_records_the_version(gql: GraphQLClient, stores: Stores, bucket: str) -> None:
    """A download by alias resolves it when the ticket is issued and records that version."""
    await three_versions(gql, stores, bucket)
    await set_alias(gql, "prod", 2)
    q = """mutation { requestDownload(input: {name: "m", alias: "prod"}) {
      __typename ... on DownloadTicket { download { version modelVersion { version aliases } } } } }"""
    ticket = (await gql(q))["requestDownload"]
    assert ticket["download"] == {"version": 2, "modelVersion": {"version": 2, "aliases": ["prod"]}}
    await set_alias(gql, "prod", 3)
    assert (await gql(q))["requestDownload"]["download"]["version"] == 3
    nope = await gql(
        'mutation { requestDownload(input: {name: "m", alias: "dev"}) { __typename ... on ModelVersionNotFound { alias } } }'
    )
    assert nope["requestDownload"] == {"__typename": "ModelVersionNotFound", "alias": "dev"}


AT = """query($a: String!, $t: DateTime!) { modelVersion(name: "m", alias: $a, at: $t) { version } }"""
ALIASES_AT = """query($t: DateTime!) { model(name: "m") { aliasesAt(at: $t) { alias version } } }"""
FULL_HISTORY = """{ model(name: "m") { aliasHistory(first: 100) {
  nodes { alias fromVersion toVersion changedAt } } } }"""


def replay(history: list[dict[str, Any]], upto: str) -> dict[str, int]:
    """The reference: the aliases after every recorded move up to `upto`, in the history's order."""
    state: dict[str, int] = {}
    for move in history:
        if move["changedAt"] > upto:
            break
        if move["toVersion"] is None:
            state.pop(move["alias"], None)
        else:
            state[move["alias"]] = move["toVersion"]
    return state


async def test_time_travel_over_20_concurrent_moves(gql: GraphQLClient, stores: Stores, bucket: str) -> None:
    """After 20 concurrent moves of two aliases (and a removal), the history's times follow its order, and
    `modelVersion(alias, at)` and `aliasesAt(at)` answer, at every recorded moment, what replaying it says."""
    await three_versions(gql, stores, bucket)
    before = (await gql('{ model(name: "m") { createdAt } }'))["model"]["createdAt"]
    await asyncio.gather(*(set_alias(gql, "prod" if i % 2 else "staging", 1 + i % 3) for i in range(20)))
    assert (await gql(REMOVE, {"n": "m", "a": "staging"}, **ALICE))["removeAlias"]["__typename"] == "Model"
    history = list(reversed((await gql(FULL_HISTORY))["model"]["aliasHistory"]["nodes"]))
    assert len(history) >= 3
    times = [move["changedAt"] for move in history]
    assert times == sorted(times), "the history's times must follow the order the moves took effect"
    assert (await gql(AT, {"a": "prod", "t": before}))["modelVersion"] is None  # before it existed
    for moment in times:
        expected = replay(history, moment)
        for alias in ("prod", "staging"):
            found = (await gql(AT, {"a": alias, "t": moment}))["modelVersion"]
            assert (found and found["version"]) == expected.get(alias), (moment, alias)
        listed = (await gql(ALIASES_AT, {"t": moment}))["model"]["aliasesAt"]
        assert {a["alias"]: a["version"] for a in listed} == expected
    now = (await gql('{ model(name: "m") { aliases { alias version } } }'))["model"]["aliases"]
    assert {a["alias"]: a["version"] for a in now} == replay(history, times[-1])
    assert (await gql(AT, {"a": "staging", "t": times[-1]}))["modelVersion"] is None  # removed
    bad = await gql.raw('{ modelVersion(name: "m", version: 1, at: "2030-01-01T00:00:00Z") { version } }')
    assert bad["errors"][0]["extensions"]["code"] == "INVALID_INPUT"


STATS_BY_ALIAS = """{ downloadStats(groupBy: [ALIAS, VERSION]) {
  source rows { requestedAlias version downloads } } }"""


async def test_downloads_record_the_alias_and_group_by_it(
    gql: GraphQLClient, http: Any, stores: Stores, bucket: str
) -> None:
    """A download by alias records `requestedAlias` (GraphQL and the one-step route); `groupBy: [ALIAS,
    VERSION]` answers from raw events who pulls what an alias pointed at, downloads without one under null."""
    await three_versions(gql, stores, bucket)
    await set_alias(gql, "prod", 1)
    by_alias = 'mutation { requestDownload(input: {name: "m", alias: "prod"}) { ... on DownloadTicket { download { requestedAlias version } } } }'
    for _ in range(2):
        found = (await gql(by_alias))["requestDownload"]["download"]
        assert found == {"requestedAlias": "prod", "version": 1}
    await set_alias(gql, "prod", 2)
    await gql(by_alias)
    response = await http.get("/models/m/download", params={"alias": "prod"}, headers=ALICE)
    assert response.status_code == 200
    by_number = 'mutation { requestDownload(input: {name: "m", version: 1}) { ... on DownloadTicket { download { requestedAlias } } } }'
    assert (await gql(by_number))["requestDownload"]["download"] == {"requestedAlias": None}
    events = (await gql("{ downloads(first: 100) { nodes { requestedAlias version } } }"))["downloads"][
        "nodes"
    ]
    reference: dict[tuple[str | None, int], int] = {}
    for e in events:
        key = (e["requestedAlias"], e["version"])
        reference[key] = reference.get(key, 0) + 1
    assert reference == {("prod", 1): 2, ("prod", 2): 2, (None, 1): 1}
    stats = (await gql(STATS_BY_ALIAS))["downloadStats"]
    assert stats["source"] == "RAW"  # the rollups do not keep the alias: never answered (or dropped) there
    assert {(r["requestedAlias"], r["version"]): r["downloads"] for r in stats["rows"]} == reference
    now = datetime.now(UTC)
    window = {"s": (now - timedelta(days=1)).isoformat(), "u": (now + timedelta(days=1)).isoformat()}
    series = await gql(
        """query($s: DateTime!, $u: DateTime!) { downloadSeries(by: ALIAS, metric: DOWNLOADS, since: $s,
             until: $u, interval: DAY) { series { key total } } }""",
        window,
    )
    got = {s["key"]: s["total"] for s in series["downloadSeries"]["series"]}
    assert got == {"prod": 4, None: 1}


def test_alias_questions_always_go_to_raw_events() -> None:
    """Grouping or filtering by the requested alias, alone or with rollup-kept dimensions, over aligned or
    unbounded ranges, is answered from raw events (the rollups do not keep it): never dropped."""
    from graphql_api.analytics.stats import source_for
    from graphql_api.queries import Dimension, EventQuery, Interval, StatsRequest, StatsSource

    day = datetime(2026, 1, 1, tzinfo=UTC)
    for query in (EventQuery(), EventQuery(since=day, until=day + timedelta(days=7))):
        for group_by in (
            [Dimension.ALIAS],
            [Dimension.ALIAS, Dimension.VERSION],
            [Dimension.MODEL, Dimension.ALIAS],
        ):
            for interval in (None, Interval.DAY):
                req = StatsRequest(query=query, group_by=group_by, interval=interval)
                assert source_for(req) is StatsSource.RAW, (query, group_by, interval)
        filtered = StatsRequest(
            query=EventQuery(since=query.since, aliases=["prod", None]), group_by=[Dimension.MODEL]
        )
        assert source_for(filtered) is StatsSource.RAW
