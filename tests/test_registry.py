"""Registering, finding and listing models through GraphQL, on both stores."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.servers import GraphQLClient, Stores

REGISTER = """
mutation Register($input: RegisterModelInput!) {
  registerModel(input: $input) {
    __typename
    ... on Model {
      id name version projectName owner tags metadata sizeBytes etag contentType storageUri createdAt
    }
    ... on Error { code message }
    ... on InvalidInput { field }
  }
}
"""


def reg_input(bucket: str, name: str = "resnet", **extra: Any) -> dict[str, Any]:
    return {"name": name, "projectName": "vision", "bucket": bucket, "key": "models/resnet.bin", **extra}


async def register(gql: GraphQLClient, variables: dict[str, Any], **headers: str) -> dict[str, Any]:
    data = await gql(REGISTER, {"input": variables}, **headers)
    result: dict[str, Any] = data["registerModel"]
    return result


async def test_register_then_query_round_trip(gql: GraphQLClient, stores: Stores, bucket: str) -> None:
    """A registered model comes back from `model` and `models` with its object's size and its owner."""
    stores.put(bucket, "models/resnet.bin", b"x" * 1234)
    made = await register(
        gql, reg_input(bucket, tags=["cv", "prod"], metadata={"acc": 0.91}), **{"X-Engineer-ID": "alice"}
    )
    assert made["__typename"] == "Model", made
    assert made["version"] == 1 and made["owner"] == "alice" and made["sizeBytes"] == 1234
    assert made["storageUri"] == f"s3://{bucket}/models/resnet.bin"
    assert made["etag"] and made["metadata"] == {"acc": 0.91}

    data = await gql('{ model(name: "resnet") { id version tags sizeBytes } }')
    assert data["model"] == {"id": made["id"], "version": 1, "tags": ["cv", "prod"], "sizeBytes": 1234}
    listed = await gql("{ models { totalCount edges { node { name owner } } } }")
    assert listed["models"]["totalCount"] == 1
    assert listed["models"]["edges"][0]["node"] == {"name": "resnet", "owner": "alice"}


async def test_owner_defaults_to_anonymous(gql: GraphQLClient, stores: Stores, bucket: str) -> None:
    """Without an X-Engineer-ID header the owner is `anonymous`."""
    stores.put(bucket, "models/resnet.bin", b"abc")
    made = await register(gql, reg_input(bucket))
    assert made["owner"] == "anonymous"


async def test_duplicate_version_is_model_already_exists(
    gql: GraphQLClient, stores: Stores, bucket: str
) -> None:
    """Registering the same (name, version) twice gives ModelAlreadyExists and keeps the first."""
    stores.put(bucket, "models/resnet.bin", b"abc")
    first = await register(gql, reg_input(bucket, version=3))
    second = await register(gql, reg_input(bucket, version=3, description="again"))
    assert first["__typename"] == "Model"
    assert second["__typename"] == "ModelAlreadyExists" and second["code"] == "MODEL_ALREADY_EXISTS"
    data = await gql('{ models(filter: {name: "resnet"}) { totalCount } }')
    assert data["models"]["totalCount"] == 1


async def test_missing_object_is_storage_object_not_found(
    gql: GraphQLClient, stores: Stores, bucket: str
) -> None:
    """An artifact that is not in the store gives StorageObjectNotFound and writes nothing."""
    stores.put(bucket, "other.bin", b"abc")
    result = await register(gql, reg_input(bucket))
    assert result["__typename"] == "StorageObjectNotFound" and result["code"] == "STORAGE_OBJECT_NOT_FOUND"
    assert (await gql("{ models { totalCount } }"))["models"]["totalCount"] == 0


async def test_auto_versions_follow_explicit_ones(gql: GraphQLClient, stores: Stores, bucket: str) -> None:
    """After an explicit version 5, the next auto-numbered version is 6."""
    stores.put(bucket, "models/resnet.bin", b"abc")
    assert (await register(gql, reg_input(bucket)))["version"] == 1
    assert (await register(gql, reg_input(bucket, version=5)))["version"] == 5
    assert (await register(gql, reg_input(bucket)))["version"] == 6
    assert (await gql('{ model(name: "resnet") { version } }'))["model"]["version"] == 6
    assert (await gql('{ model(name: "resnet", version: 5) { version } }'))["model"]["version"] == 5
    assert (await gql('{ model(name: "nope") { version } }'))["model"] is None


async def test_concurrent_same_version_has_one_winner(
    gql: GraphQLClient, stores: Stores, bucket: str
) -> None:
    """50 concurrent registrations of one (name, version): exactly one Model and 49 ModelAlreadyExists."""
    stores.put(bucket, "models/resnet.bin", b"abc")
    results = await asyncio.gather(*(register(gql, reg_input(bucket, version=7)) for _ in range(50)))
    kinds = sorted(r["__typename"] for r in results)
    assert kinds.count("Model") == 1
    assert kinds.count("ModelAlreadyExists") == 49


async def test_concurrent_auto_versions_are_gapless(gql: GraphQLClient, stores: Stores, bucket: str) -> None:
    """50 concurrent registrations with no version get versions 1..50, each exactly once."""
    stores.put(bucket, "models/resnet.bin", b"abc")
    results = await asyncio.gather(*(register(gql, reg_input(bucket)) for _ in range(50)))
    assert all(r["__typename"] == "Model" for r in results), results
    assert sorted(r["version"] for r in results) == list(range(1, 51))


async def test_archived_models_are_hidden(gql: GraphQLClient, stores: Stores, bucket: str) -> None:
    """An archived version leaves `models` and stops being the latest, unless asked for explicitly."""
    stores.put(bucket, "models/resnet.bin", b"abc")
    await register(gql, reg_input(bucket))
    await register(gql, reg_input(bucket))
    archived = await gql(
        'mutation { archiveModel(name: "resnet", version: 2) { __typename ... on Model { archived } } }'
    )
    assert archived["archiveModel"] == {"__typename": "Model", "archived": True}
    assert (await gql('{ model(name: "resnet") { version } }'))["model"]["version"] == 1
    assert (await gql("{ models { totalCount } }"))["models"]["totalCount"] == 1
    assert (await gql("{ models(filter: {includeArchived: true}) { totalCount } }"))["models"][
        "totalCount"
    ] == 2
    missing = await gql('mutation { archiveModel(name: "resnet", version: 9) { __typename } }')
    assert missing["archiveModel"]["__typename"] == "ModelNotFound"


BAD_INPUTS = [
    ({"name": ""}, "name"),
    ({"name": "x" * 129}, "name"),
    ({"name": "bad name!"}, "name"),
    ({"version": 0}, "version"),
    ({"version": -3}, "version"),
    ({"bucket": "Bad_Bucket"}, "bucket"),
    ({"bucket": "ab"}, "bucket"),
    ({"key": ""}, "key"),
    ({"key": "a/../b"}, "key"),
    ({"key": "x" * 1025}, "key"),
    ({"metadata": [1, 2]}, "metadata"),
    ({"metadata": "text"}, "metadata"),
    ({"metadata": {"blob": "x" * 70_000}}, "metadata"),
    ({"projectName": ""}, "projectName"),
]


async def test_bad_inputs_are_typed_and_write_nothing(
    gql: GraphQLClient, stores: Stores, bucket: str
) -> None:
    """Each invalid field gives InvalidInput naming that field, and no model is written."""
    stores.put(bucket, "models/resnet.bin", b"abc")
    for override, field in BAD_INPUTS:
        result = await register(gql, {**reg_input(bucket), **override})
        assert result["__typename"] == "InvalidInput", (override, result)
        assert result["field"] == field and result["code"] == "INVALID_INPUT", (override, result)
    assert (await gql("{ models(filter: {includeArchived: true}) { totalCount } }"))["models"][
        "totalCount"
    ] == 0


async def test_query_argument_errors_are_top_level_invalid_input(gql: GraphQLClient) -> None:
    """`first` outside 1..100, a bad cursor, a version below 1: INVALID_INPUT errors naming the field."""
    cases = [
        ("{ models(first: 101) { totalCount } }", "first"),
        ("{ models(first: 0) { totalCount } }", "first"),
        ('{ models(after: "not-a-cursor") { totalCount } }', "after"),
        ('{ models(after: "eyJvIjoiTkFNRV9BU0MiLCJrIjpbXX0") { totalCount } }', "after"),
        ('{ model(name: "x", version: 0) { id } }', "version"),
    ]
    for query, field in cases:
        body = await gql.raw(query)
        assert body["data"] is None or body["data"].get("models") is None
        (error,) = body["errors"]
        assert error["extensions"] == {"code": "INVALID_INPUT", "field": field}, (query, error)


async def test_pages_of_100_walk_250_models_exactly_once(
    gql: GraphQLClient, stores: Stores, bucket: str
) -> None:
    """Walking 250 models in pages of 100, in every order, yields each model exactly once."""
    stores.put(bucket, "m.bin", b"abc")
    for i in range(25):
        for v in range(10):
            r = await register(
                gql, {"name": f"m{i:02d}", "projectName": "p", "bucket": bucket, "key": "m.bin"}
            )
            assert r["__typename"] == "Model", (i, v, r)
    query = """query($after: String, $order: ModelOrder!) {
      models(first: 100, after: $after, orderBy: $order) {
        totalCount pageInfo { hasNextPage endCursor } edges { cursor node { name version createdAt } }
      }
    }"""
    for order in ["CREATED_AT_DESC", "CREATED_AT_ASC", "NAME_ASC", "NAME_DESC"]:
        seen: list[tuple[str, int]] = []
        after = None
        pages = 0
        while True:
            page = (await gql(query, {"after": after, "order": order}))["models"]
            assert page["totalCount"] == 250
            seen += [(e["node"]["name"], e["node"]["version"]) for e in page["edges"]]
            pages += 1
            if not page["pageInfo"]["hasNextPage"]:
                break
            after = page["pageInfo"]["endCursor"]
        assert pages == 3 and len(seen) == 250 and len(set(seen)) == 250, order
        if order == "NAME_ASC":
            assert seen == sorted(seen)
        if order == "NAME_DESC":
            assert seen == sorted(seen, reverse=True)


async def test_filters_combine(gql: GraphQLClient, stores: Stores, bucket: str) -> None:
    """Name prefix, project, owner, tags (all of them) and the createdAt range filter as documented."""
    stores.put(bucket, "m.bin", b"abc")
    specs = [
        ("bert-base", "nlp", "alice", ["prod", "en"]),
        ("bert-large", "nlp", "bob", ["en"]),
        ("resnet", "vision", "alice", ["prod"]),
    ]
    for name, project, owner, tags in specs:
        r = await register(
            gql,
            {"name": name, "projectName": project, "bucket": bucket, "key": "m.bin", "tags": tags},
            **{"X-Engineer-ID": owner},
        )
        assert r["__typename"] == "Model"

    async def names(flt: dict[str, Any]) -> list[str]:
        q = "query($f: ModelFilter) { models(filter: $f, orderBy: NAME_ASC) { nodes { name } } }"
        return [n["name"] for n in (await gql(q, {"f": flt}))["models"]["nodes"]]

    assert await names({"namePrefix": "bert"}) == ["bert-base", "bert-large"]
    assert await names({"name": "resnet"}) == ["resnet"]
    assert await names({"name": "resnet", "namePrefix": "bert"}) == []
    assert await names({"projectName": "nlp", "owner": "alice"}) == ["bert-base"]
    assert await names({"tags": ["prod", "en"]}) == ["bert-base"]
    assert await names({"tags": ["prod"]}) == ["bert-base", "resnet"]
    assert (
        await names({"createdAfter": "2000-01-01T00:00:00Z", "createdBefore": "2000-01-02T00:00:00Z"}) == []
    )
    assert len(await names({"createdAfter": "2000-01-01T00:00:00Z"})) == 3
    assert await names({"namePrefix": "bert.*"}) == []  # a prefix is literal text, not a regex


async def test_request_errors_carry_codes(gql: GraphQLClient, stores: Stores, bucket: str) -> None:
    """Unknown fields, uncoercible variables and a malformed X-Engineer-ID get typed top-level errors."""
    body = await gql.raw("{ nope }")
    assert body["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    body = await gql.raw("{ models(")
    assert body["errors"][0]["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"
    body = await gql.raw("query($o: ModelOrder!) { models(orderBy: $o) { totalCount } }", {"o": "SIDEWAYS"})
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    stores.put(bucket, "models/resnet.bin", b"abc")
    body = await gql.raw(REGISTER, {"input": reg_input(bucket)}, **{"X-Engineer-ID": "no spaces allowed"})
    assert body["data"] is None and body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert (await gql("{ models { totalCount } }"))["models"]["totalCount"] == 0


async def test_unexpected_errors_are_masked(gql: GraphQLClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug inside a resolver reaches the client as `Internal server error.` with no detail or traceback."""
    from graphql_api import registry

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret connection string mongodb://user:pw@host")

    monkeypatch.setattr(registry, "get_model", broken)
    body = await gql.raw('{ model(name: "x") { id } }')
    (error,) = body["errors"]
    assert error["message"] == "Internal server error." and error["extensions"] == {
        "code": "INTERNAL_SERVER_ERROR"
    }
    assert "secret" not in str(body) and "Traceback" not in str(body)


async def test_download_counts_are_batched(
    gql: GraphQLClient, stores: Stores, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """downloadCount and lastDownloadedAt for a page of 30 models cost one batched lookup, not 60."""
    from graphql_api.db import rollups

    stores.put(bucket, "models/resnet.bin", b"abc")
    for i in range(30):
        assert (await register(gql, reg_input(bucket, name=f"m{i}")))["__typename"] == "Model"
    calls: list[int] = []
    real = rollups.totals_by_version

    async def counting(keys: Any) -> Any:
        calls.append(len(keys))
        return await real(keys)

    monkeypatch.setattr(rollups, "totals_by_version", counting)
    data = await gql("{ models(first: 30) { nodes { name downloadCount lastDownloadedAt } } }")
    assert len(data["models"]["nodes"]) == 30 and calls == [30]
