"""The model cache: queries read models from memory, and no writer, instance or outage leaves them stale."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette

from graphql_api.app import create_app
from graphql_api.db import models as models_db
from graphql_api.documents import RegisteredModel
from graphql_api.metrics import Metrics
from graphql_api.model_cache import ModelCache
from graphql_api.services import Services
from tests.servers import GraphQLClient, ServerProcess, Stores, eventually, make_settings
from tests.test_registry import reg_input, register

ALICE = {"X-Engineer-ID": "alice"}
DESCRIPTION = '{ model(name: "resnet") { description } }'
UPDATE = 'mutation($d: String!) { updateModel(input: {name: "resnet", description: $d}) { __typename } }'


def services(app: Starlette) -> Services:
    found: Services = app.state.services
    return found


def lookups(app: Starlette, result: str) -> float:
    value = services(app).metrics.registry.get_sample_value(
        "modelhub_model_cache_lookups_total", {"result": result}
    )
    return value or 0.0


async def live(app: Starlette) -> None:
    assert await eventually(lambda: _true(services(app).models.live)), "the change stream did not open"


async def _true(value: bool) -> bool:
    return value


def lagging(app: Starlette, monkeypatch: pytest.MonkeyPatch) -> None:
    """The change stream's reports stop reaching the cache, as if they lagged far behind the writes: what
    remains fresh is fresh by the cache's own rules."""
    monkeypatch.setattr(services(app).models, "changed", lambda model_id: None)


async def registered(gql: GraphQLClient, stores: Stores, bucket: str) -> None:
    stores.put(bucket, "models/resnet.bin", b"x" * 10)
    assert (await register(gql, reg_input(bucket), **ALICE))["__typename"] == "ModelVersion"


async def lagging_cache(
    app: Starlette, monkeypatch: pytest.MonkeyPatch, gql: GraphQLClient, stores: Stores, bucket: str
) -> None:
    """`resnet` registered, the cache live, then its change stream lagging."""
    await registered(gql, stores, bucket)
    await live(app)
    lagging(app, monkeypatch)


@pytest.mark.parametrize("store_kind", ["local"])
async def test_repeated_queries_are_served_from_memory(
    app: Starlette, monkeypatch: pytest.MonkeyPatch, gql: GraphQLClient, stores: Stores, bucket: str
) -> None:
    """A model read by one query is served to the next from memory (a hit, no miss)."""
    await lagging_cache(app, monkeypatch, gql, stores, bucket)  # its registration's changes evict nothing
    await gql(DESCRIPTION, **ALICE)
    hits, misses = lookups(app, "hit"), lookups(app, "miss")
    for _ in range(3):
        assert (await gql(DESCRIPTION, **ALICE))["model"] == {"description": None}
    assert lookups(app, "hit") == hits + 3 and lookups(app, "miss") == misses


@pytest.mark.parametrize("store_kind", ["local"])
async def test_a_caller_reads_its_own_mutation_at_once(
    app: Starlette, monkeypatch: pytest.MonkeyPatch, gql: GraphQLClient, stores: Stores, bucket: str
) -> None:
    """Each updateModel is visible to the very next query of the same process, without its change having
    reached the cache through the stream."""
    await lagging_cache(app, monkeypatch, gql, stores, bucket)
    for i in range(30):
        await gql(DESCRIPTION, **ALICE)  # held in memory
        assert (await gql(UPDATE, {"d": f"v{i}"}, **ALICE))["updateModel"]["__typename"] == "Model"
        assert (await gql(DESCRIPTION, **ALICE))["model"] == {"description": f"v{i}"}


@pytest.mark.parametrize("store_kind", ["local"])
async def test_a_mutation_reads_models_fresh(
    app: Starlette, monkeypatch: pytest.MonkeyPatch, gql: GraphQLClient, stores: Stores, bucket: str
) -> None:
    """A mutation's own selection (the model of the version it made) never comes from memory."""
    await lagging_cache(app, monkeypatch, gql, stores, bucket)
    before = await gql('{ modelVersion(name: "resnet") { model { updatedAt } } }', **ALICE)
    assert len(services(app).models) == 1
    await asyncio.sleep(0.01)  # the next write's updatedAt differs
    made = await gql(
        "mutation($input: RegisterModelInput!) { registerModel(input: $input) { ... on ModelVersion "
        "{ version model { updatedAt } } } }",
        {"input": reg_input(bucket)},
        **ALICE,
    )
    after = await gql('{ model(name: "resnet") { updatedAt } }', **ALICE)
    assert made["registerModel"]["model"] == after["model"] != before["modelVersion"]["model"]


@pytest.mark.parametrize("store_kind", ["local"])
async def test_another_writer_s_change_reaches_the_cache(
    app: Starlette, gql: GraphQLClient, stores: Stores, bucket: str
) -> None:
    """A change written by another instance (straight to the DB) replaces the cached model within moments,
    long before the entries' expiry."""
    await registered(gql, stores, bucket)
    await live(app)
    await gql(DESCRIPTION, **ALICE)
    await gql(DESCRIPTION, **ALICE)
    assert len(services(app).models) == 1
    await models_db.update_model("resnet", {"description": "from elsewhere"})

    async def seen() -> bool:
        return bool((await gql(DESCRIPTION, **ALICE))["model"] == {"description": "from elsewhere"})

    assert await eventually(seen, seconds=5)


@pytest.mark.parametrize("store_kind", ["local"])
async def test_a_read_that_raced_a_change_is_not_kept(
    app: Starlette, monkeypatch: pytest.MonkeyPatch, gql: GraphQLClient, stores: Stores, bucket: str
) -> None:
    """A read during which a change arrived answers its caller but is not kept in memory."""
    await registered(gql, stores, bucket)
    await live(app)
    cache = services(app).models
    cache.clear()
    real = models_db.find_models

    async def racing(names: list[str]) -> dict[str, Any]:
        found = await real(names)
        cache.forget(next(iter(found.values())).id)  # the change stream reports a write meanwhile
        return found

    monkeypatch.setattr(models_db, "find_models", racing)
    assert await cache.get("resnet") is not None
    assert len(cache) == 0
    monkeypatch.setattr(models_db, "find_models", real)
    assert await cache.get("resnet") is not None
    assert len(cache) == 1


@pytest.mark.parametrize("store_kind", ["local"])
async def test_capacity_and_settings(app: Starlette, gql: GraphQLClient, stores: Stores, bucket: str) -> None:
    """At most `entries` models are held, least recently used out first; 0 entries reads everything from
    the DB."""
    for name in ("a", "b", "c"):
        stores.put(bucket, "models/resnet.bin", b"x")
        assert (await register(gql, reg_input(bucket, name=name), **ALICE))["__typename"] == "ModelVersion"
    metrics = Metrics()
    small = ModelCache(metrics, entries=2, ttl=60)
    task = asyncio.create_task(small.run())
    try:
        await eventually(lambda: _true(small.live))
        await small.get_many(["a", "b"])
        await small.get("a")  # b is now the least recently used
        await small.get("c")
        assert len(small) == 2
        before = metrics.registry.get_sample_value("modelhub_model_cache_lookups_total", {"result": "miss"})
        assert await small.get("a") is not None
        assert (
            metrics.registry.get_sample_value("modelhub_model_cache_lookups_total", {"result": "miss"})
            == before
        )
        await small.get("b")
        assert (
            metrics.registry.get_sample_value("modelhub_model_cache_lookups_total", {"result": "miss"})
            == (before or 0) + 1
        )
    finally:
        task.cancel()
    off = ModelCache(Metrics(), entries=0, ttl=60)
    await off.run()  # returns at once: nothing to follow
    assert not off.live and (await off.get("a")) is not None and len(off) == 0


@pytest.mark.process
async def test_a_database_outage_empties_and_bypasses_the_cache(tmp_path: Path) -> None:
    """When the DB dies the cache empties and every read goes to the DB (bypass); once the DB is back the
    stream reopens and models are held again."""
    mongo = ServerProcess("mongo", tmp_path / "mongo").start()
    try:
        settings = make_settings(
            "local", mongo.url, None, tmp_path / "data", mongo_server_selection_timeout_seconds=1.0
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            cache = services(app).models
            await live(app)
            await models_db.insert_model(RegisteredModel(name="m", project_name="p", owner="alice"))

            async def held() -> bool:  # kept once no change (its own insert's) arrives during the read
                return await cache.get("m") is not None and len(cache) == 1

            assert await eventually(held)
            mongo.kill()

            async def bypassing() -> bool:
                return not cache.live and len(cache) == 0

            assert await eventually(bypassing, seconds=20)
            mongo.start()
            await live(app)
            assert await eventually(held)
    finally:
        mongo.stop()
