"""Aliases: set, move, remove, their recorded history, and downloads by alias."""

from __future__ import annotations

import asyncio
import itertools
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
