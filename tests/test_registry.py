"""Registering, finding, updating and listing models and versions through GraphQL, on both stores."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.servers import GraphQLClient, Stores

REGISTER = """
mutation Register($input: RegisterModelInput!) {
  registerModel(input: $input) {
    __typename
    ... on ModelVersion {
      id name version projectName owner tags metadata sizeBytes etag contentType storageUri createdAt
    }
    ... on UserError { code message }
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
    """A registered version comes back from `modelVersion`, its model from `model` and `models`."""
    stores.put(bucket, "models/resnet.bin", b"x" * 1234)
    made = await register(
        gql, reg_input(bucket, tags=["cv", "prod"], metadata={"acc": 0.91}), **{"X-Engineer-ID": "alice"}
    )
    assert made["__typename"] == "ModelVersion", made
    assert made["version"] == 1 and made["owner"] == "alice" and made["sizeBytes"] == 1234
    assert made["storageUri"] == f"s3://{bucket}/models/resnet.bin"
    assert made["etag"] and made["metadata"] == {"acc": 0.91}

    data = await gql('{ modelVersion(name: "resnet") { id version tags sizeBytes model { name owner } } }')
    assert data["modelVersion"] == {
        "id": made["id"],
        "version": 1,
        "tags": ["cv", "prod"],
        "sizeBytes": 1234,
        "model": {"name": "resnet", "owner": "alice"},
    }
    model = (await gql('{ model(name: "resnet") { name projectName owner tags latestVersion { version } '
                       "versions { totalCount nodes { version } } } }"))["model"]  # fmt: skip
    assert model == {
        "name": "resnet",
        "projectName": "vision",
        "owner": "alice",
        "tags": ["cv", "prod"],
        "latestVersion": {"version": 1},
        "versions": {"totalCount": 1, "nodes": [{"version": 1}]},
    }
    listed = await gql("{ models { totalCount edges { node { name owner } } } }")
    assert listed["models"]["totalCount"] == 1
    assert listed["models"]["edges"][0]["node"] == {"name": "resnet", "owner": "alice"}


async def test_a_model_keeps_its_project_and_owner(gql: GraphQLClient, stores: Stores, bucket: str) -> None:
    """A new version in another project is InvalidInput; a version by someone else is FORBIDDEN."""
    stores.put(bucket, "models/resnet.bin", b"abc")
    alice = {"X-Engineer-ID": "alice"}
    assert (await register(gql, reg_input(bucket), **alice))["__typename"] == "ModelVersion"
    moved = await register(gql, reg_input(bucket, projectName="nlp"), **alice)
    assert moved["__typename"] == "InvalidInput" and moved["field"] == "projectName"
    body = await gql.raw(REGISTER, {"input": reg_input(bucket)}, **{"X-Engineer-ID": "mallory"})
    assert body["data"] is None and body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    versions = await gql('{ model(name: "resnet") { versions { totalCount } } }')
    assert versions["model"]["versions"]["totalCount"] == 1


async def test_owner_defaults_to_anonymous(gql: GraphQLClient, stores: Stores, bucket: str) -> None:
    """Without an X-Engineer-ID header the owner is `anonymous`."""
    stores.put(bucket, "models/resnet.bin", b"abc")
    made = await register(gql, reg_input(bucket))
    assert made["owner"] == "anonymous"


async def test_duplicate_version_is_model_version_already_exists(
    gql: GraphQLClient, stores: Stores, bucket: str
) -> None:
    """Registering the same (name, version) twice gives ModelVersionAlreadyExists and keeps the first."""
    stores.put(bucket, "models/resnet.bin", b"abc")
    first = await register(gql, reg_input(bucket, version=3))
    second = await register(gql, reg_input(bucket, version=3, description="again"))
    assert first["__typename"] == "ModelVersion"
    assert second["__typename"] == "ModelVersionAlreadyExists"
    assert second["code"] == "MODEL_VERSION_ALREADY_EXISTS"
    data = await gql('{ model(name: "resnet") { versions { totalCount nodes { description } } } }')
    assert data["model"]["versions"] == {"totalCount": 1, "nodes": [{"description": None}]}


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
    assert (await gql('{ modelVersion(name: "resnet") { version } }'))["modelVersion"]["version"] == 6
    five = await gql('{ modelVersion(name: "resnet", version: 5) { version } }')
    assert five["modelVersion"]["version"] == 5
    assert (await gql('{ modelVersion(name: "nope") { version } }'))["modelVersion"] is None
    assert (await gql('{ model(name: "nope") { name } }'))["model"] is None


async def test_concurrent_same_version_has_one_winner(
    gql: GraphQLClient, stores: Stores, bucket: str
) -> None:
    """50 concurrent registrations of one (name, version): one ModelVersion, 49 ModelVersionAlreadyExists."""
    stores.put(bucket, "models/resnet.bin", b"abc")
    results = await asyncio.gather(*(register(gql, reg_input(bucket, version=7)) for _ in range(50)))
    kinds = sorted(r["__typename"] for r in results)
    assert kinds.count("ModelVersion") == 1
    assert kinds.count("ModelVersionAlreadyExists") == 49


# slow: ~4s of CPU on this 2-core machine (`make check` leaves it to `make test`)
@pytest.mark.slow
async def test_concurrent_auto_versions_are_gapless(gql: GraphQLClient, stores: Stores, bucket: str) -> None:
    """50 concurrent registrations with no version get versions 1..50, each exactly once."""
    stores.put(bucket, "models/resnet.bin", b"abc")
    results = await asyncio.gather(*(register(gql, reg_input(bucket)) for _ in range(50)))
    assert all(r["__typename"] == "ModelVersion" for r in results), results
    assert sorted(r["version"] for r in results) == list(range(1, 51))


ARCHIVE = """mutation($n: String!, $v: Int!) {
  archiveModelVersion(input: {name: $n, version: $v}) { __typename ... on ModelVersion { archived } }
}"""


async def test_archived_versions_are_hidden(gql: GraphQLClient, stores: Stores, bucket: str) -> None:
    """An archived version leaves `versions` and stops being the latest, unless asked for explicitly."""
    stores.put(bucket, "models/resnet.bin", b"abc")
    await register(gql, reg_input(bucket))
    await register(gql, reg_input(bucket))
    archived = await gql(ARCHIVE, {"n": "resnet", "v": 2})
    assert archived["archiveModelVersion"] == {"__typename": "ModelVersion", "archived": True}
    assert (await gql('{ modelVersion(name: "resnet") { version } }'))["modelVersion"]["version"] == 1
    q = 'query($a: Boolean!) { model(name: "resnet") { latestVersion { version } versions(includeArchived: $a) { totalCount } } }'
    assert (await gql(q, {"a": False}))["model"] == {
        "latestVersion": {"version": 1},
        "versions": {"totalCount": 1},
    }
    assert (await gql(q, {"a": True}))["model"]["versions"]["totalCount"] == 2
    still = await gql('{ modelVersion(name: "resnet", version: 2) { archived } }')
    assert still["modelVersion"] == {"archived": True}  # asked for by number, it is still there
    missing = await gql(ARCHIVE, {"n": "resnet", "v": 9})
    assert missing["archiveModelVersion"]["__typename"] == "ModelVersionNotFound"
    assert (await gql(ARCHIVE, {"n": "nope", "v": 1}))["archiveModelVersion"]["__typename"] == "ModelNotFound"


async def test_updates_change_notes_only(gql: GraphQLClient, stores: Stores, bucket: str) -> None:
    """updateModel and updateModelVersion change description, tags and metadata; nothing else moves."""
    stores.put(bucket, "models/resnet.bin", b"abc")
    made = await register(gql, reg_input(bucket))
    m = await gql(
        'mutation { updateModel(input: {name: "resnet", description: "ResNet-50", tags: ["cv"]}) '
        "{ __typename ... on Model { description tags } } }"
    )
    assert m["updateModel"] == {"__typename": "Model", "description": "ResNet-50", "tags": ["cv"]}
    v = await gql(
        'mutation { updateModelVersion(input: {name: "resnet", version: 1, metadata: {acc: 0.9}}) '
        "{ __typename ... on ModelVersion { metadata key etag version } } }"
    )
    assert v["updateModelVersion"] == {
        "__typename": "ModelVersion",
        "metadata": {"acc": 0.9},
        "key": "models/resnet.bin",
        "etag": made["etag"],
        "version": 1,
    }
    empty = await gql('mutation { updateModelVersion(input: {name: "resnet", version: 1}) { __typename } }')
    assert empty["updateModelVersion"]["__typename"] == "InvalidInput"
    other = await gql.raw(
        'mutation { updateModel(input: {name: "resnet", description: "mine"}) { __typename } }',
        **{"X-Engineer-ID": "mallory"},
    )
    assert other["errors"][0]["extensions"]["code"] == "FORBIDDEN"


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
    assert (await gql("{ models { totalCount } }"))["models"]["totalCount"] == 0


async def test_query_argument_errors_are_top_level_invalid_input(gql: GraphQLClient) -> None:
    """`first` outside 1..100, a bad cursor, a version below 1: INVALID_INPUT errors naming the field."""
    cases = [
        ("{ models(first: 101) { totalCount } }", "first"),
        ("{ models(first: 0) { totalCount } }", "first"),
        ('{ models(after: "not-a-cursor") { totalCount } }', "after"),
        ('{ models(after: "eyJvIjoiTkFNRV9BU0MiLCJrIjpbXX0") { totalCount } }', "after"),
        ('{ modelVersion(name: "x", version: 0) { id } }', "version"),
        ('{ modelVersion(name: "x", alias: "123") { id } }', "alias"),
        ('{ modelVersion(name: "x", version: 1, alias: "prod") { id } }', "alias"),
        ("{ models(first: 5, last: 5) { totalCount } }", "last"),
        ('{ node(id: "bm90LWFuLWlk") { id } }', "id"),
    ]
    for query, field in cases:
        body = await gql.raw(query)
        assert body["data"] is None or body["data"].get("models") is None
        (error,) = body["errors"]
        assert error["extensions"] == {"code": "INVALID_INPUT", "field": field}, (query, error)


# slow: ~5s of CPU on this 2-core machine (`make check` leaves it to `make test`)
@pytest.mark.slow
async def test_pages_walk_every_model_exactly_once_both_ways(
    gql: GraphQLClient, stores: Stores, bucket: str
) -> None:
    """Walking 120 models in pages of 50, forward and backward, in every order, yields each exactly once."""
    stores.put(bucket, "m.bin", b"abc")
    for i in range(120):
        r = await register(gql, {"name": f"m{i:03d}", "projectName": "p", "bucket": bucket, "key": "m.bin"})
        assert r["__typename"] == "ModelVersion", (i, r)
    forward = """query($after: String, $order: ModelOrder!) {
      models(first: 50, after: $after, orderBy: $order) {
        totalCount pageInfo { hasNextPage endCursor } edges { cursor node { name createdAt } }
      }
    }"""
    backward = """query($before: String, $order: ModelOrder!) {
      models(last: 50, before: $before, orderBy: $order) {
        pageInfo { hasPreviousPage startCursor } nodes { name }
      }
    }"""
    for field in ["CREATED_AT", "UPDATED_AT", "NAME", "DOWNLOADS"]:
        for direction in ["ASC", "DESC"]:
            order = {"field": field, "direction": direction}
            seen: list[str] = []
            after = None
            while True:
                page = (await gql(forward, {"after": after, "order": order}))["models"]
                assert page["totalCount"] == 120
                seen += [e["node"]["name"] for e in page["edges"]]
                if not page["pageInfo"]["hasNextPage"]:
                    break
                after = page["pageInfo"]["endCursor"]
            assert len(seen) == 120 and len(set(seen)) == 120, order
            if field == "NAME":
                assert seen == sorted(seen, reverse=direction == "DESC")
            back: list[str] = []
            before = None
            while True:
                page = (await gql(backward, {"before": before, "order": order}))["models"]
                back = [n["name"] for n in page["nodes"]] + back
                if not page["pageInfo"]["hasPreviousPage"]:
                    break
                before = page["pageInfo"]["startCursor"]
            assert back == seen, order


async def test_filters_combine(gql: GraphQLClient, stores: Stores, bucket: str) -> None:
    """Names, name prefix, projects, owners, tags (all of them) and the createdAt range filter as documented."""
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
        assert r["__typename"] == "ModelVersion"

    async def names(flt: dict[str, Any]) -> list[str]:
        q = "query($f: ModelFilter) { models(filter: $f, orderBy: {field: NAME, direction: ASC}) { nodes { name } } }"
        return [n["name"] for n in (await gql(q, {"f": flt}))["models"]["nodes"]]

    assert await names({"namePrefix": "bert"}) == ["bert-base", "bert-large"]
    assert await names({"names": ["resnet"]}) == ["resnet"]
    assert await names({"names": ["resnet", "bert-base"]}) == ["bert-base", "resnet"]
    assert await names({"names": ["resnet"], "namePrefix": "bert"}) == []
    assert await names({"projectNames": ["nlp"], "owners": ["alice"]}) == ["bert-base"]
    assert await names({"owners": ["alice", "bob"]}) == ["bert-base", "bert-large", "resnet"]
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
    body = await gql.raw(
        "query($o: ModelOrder!) { models(orderBy: $o) { totalCount } }", {"o": {"field": "SIDEWAYS"}}
    )
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
    """Download counts for a page of 30 models and their latest versions cost one lookup per kind, not 60+."""
    from graphql_api.db import rollups

    stores.put(bucket, "models/resnet.bin", b"abc")
    for i in range(30):
        assert (await register(gql, reg_input(bucket, name=f"m{i}")))["__typename"] == "ModelVersion"
    calls: list[tuple[str, int]] = []
    for name in ("totals_by_version", "totals_by_model"):
        real = getattr(rollups, name)

        async def counting(keys: Any, *pending: Any, real: Any = real, name: str = name) -> Any:
            calls.append((name, len(keys)))
            return await real(keys, *pending)

        monkeypatch.setattr(rollups, name, counting)
    q = "{ models(first: 30) { nodes { name downloadCount lastDownloadedAt latestVersion { downloadCount } } } }"
    data = await gql(q)
    assert len(data["models"]["nodes"]) == 30
    assert sorted(calls) == [("totals_by_model", 30), ("totals_by_version", 30)]


async def test_every_object_round_trips_through_node(gql: GraphQLClient, stores: Stores, bucket: str) -> None:
    """Model, ModelVersion, DownloadEvent and AliasChange ids resolve through `node` and `nodes` to themselves."""
    stores.put(bucket, "models/resnet.bin", b"abc")
    await register(gql, reg_input(bucket))
    await gql('mutation { setAlias(input: {name: "resnet", alias: "prod", version: 1}) { __typename } }')
    ticket = await gql(
        'mutation { requestDownload(input: {name: "resnet"}) { ... on DownloadTicket { download { id } } } }'
    )
    ids = {
        "DownloadEvent": ticket["requestDownload"]["download"]["id"],
        **{
            k: v
            for k, v in zip(
                ["Model", "ModelVersion", "AliasChange"],
                (
                    await gql(
                        '{ model(name: "resnet") { id latestVersion { id } aliasHistory { nodes { id } } } }'
                    )
                )["model"].values(),
                strict=True,
            )
        },
    }
    ids["ModelVersion"] = ids["ModelVersion"]["id"]
    ids["AliasChange"] = ids["AliasChange"]["nodes"][0]["id"]
    for type_name, node_id in ids.items():
        found = await gql("query($id: ID!) { node(id: $id) { __typename id } }", {"id": node_id})
        assert found["node"] == {"__typename": type_name, "id": node_id}
    many = await gql(
        "query($ids: [ID!]!) { nodes(ids: $ids) { id } }",
        {"ids": [*ids.values(), "TW9kZWw6NjU0MzIxMDk4NzY1NDMyMTA5ODc2NTQz"]},
    )
    assert [n["id"] if n else None for n in many["nodes"]] == [*ids.values(), None]


async def test_old_per_version_documents_are_migrated(mongo_uri: str) -> None:
    """Data from before the split (one `models` document per version) becomes models + model_versions."""
    import uuid
    from datetime import UTC, datetime

    from pymongo import AsyncMongoClient

    from graphql_api.db import connect
    from graphql_api.documents import ModelVersion, RegisteredModel

    name = "migrate_" + uuid.uuid4().hex[:8]
    raw: AsyncMongoClient[Any] = AsyncMongoClient(mongo_uri, tz_aware=True)
    base = {"project_name": "p", "bucket": "b", "key": "k", "size_bytes": 1, "etag": "e", "content_type": "x"}
    docs = [
        {"name": "a", "version": 2, "owner": "bob", **base, "created_at": datetime(2025, 1, 3, tzinfo=UTC)},
        {"name": "a", "version": 1, "owner": "alice", **base, "created_at": datetime(2025, 1, 1, tzinfo=UTC)},
        {"name": "b", "version": 1, "owner": "carol", **base, "created_at": datetime(2025, 1, 2, tzinfo=UTC)},
    ]
    await raw[name]["models"].insert_many(docs)
    await raw[name]["models"].create_index([("name", 1), ("version", 1)], unique=True)
    async with connect(mongo_uri, name):
        models = {m.name: m for m in await RegisteredModel.find_all().to_list()}
        assert models["a"].owner == "alice" and models["b"].owner == "carol"
        assert models["a"].updated_at == datetime(2025, 1, 3, tzinfo=UTC)
        assert {(v.name, v.version) for v in await ModelVersion.find_all().to_list()} == {
            ("a", 1),
            ("a", 2),
            ("b", 1),
        }
    async with connect(mongo_uri, name):  # a second start finds nothing left to migrate
        assert await RegisteredModel.count() == 2
    await raw.drop_database(name)
    await raw.close()
