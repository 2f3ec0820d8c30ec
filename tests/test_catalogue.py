"""The in-memory catalogue: its pages are the database's pages, cost the page, and follow every writer."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest
from beanie import PydanticObjectId
from starlette.applications import Starlette

from graphql_api import registration, registry
from graphql_api.auth import Principal
from graphql_api.catalogue import GATHER_LIMIT, Catalogue
from graphql_api.db import models as models_db
from graphql_api.documents import RegisteredModel, utcnow
from graphql_api.errors import InvalidInput
from graphql_api.model_cache import ModelCache
from graphql_api.pagination import PageRequest
from graphql_api.queries import ModelOrder, ModelOrderField, ModelQuery
from graphql_api.registration import RegisterRequest
from graphql_api.roles import ProjectRole
from graphql_api.scope import Scope
from tests.servers import GraphQLClient, Stores, eventually
from tests.test_model_cache import ALICE, live, services
from tests.test_registry import reg_input, register

EVERY = Scope.everything(None)

PAGE = 50


def spread_models(count: int, seed: int = 3) -> list[RegisteredModel]:
    """`count` models named m00000.., over two projects, three owners and a few tags, their dates spread
    from minutes to years back with ties."""
    rng, now = random.Random(seed), utcnow()
    models = []
    for i in range(count):
        created = now - timedelta(seconds=rng.choice([0, 1, 60, 3600, 86400 * 3, 86400 * 400]) * rng.random())
        created = created.replace(microsecond=created.microsecond // 1000 * 1000)  # Mongo keeps ms
        updated = min(now, created + timedelta(days=rng.choice([0, 0, 1, 30])))
        tags = rng.sample(["cv", "nlp", "prod", "big"], rng.randint(0, 2))
        models.append(RegisteredModel(id=PydanticObjectId(), name=f"m{i:05d}", project_name=rng.choice("pq"),
                                      owner=rng.choice(["ann", "bob", "cy"]), tags=tags, created_at=created,
                                      updated_at=updated))  # fmt: skip
    return models


async def loaded(app: Starlette, count: int) -> Catalogue:
    """The app's catalogue once it holds the `count` models inserted before, and every change the stream
    reported for them: a sentinel written after them has come through the (ordered) stream."""
    await live(app)
    catalogue = services(app).models.catalogue
    await models_db.insert_model(RegisteredModel(name="zz-sentinel", project_name="s", owner="s"))

    async def holds() -> bool:
        return await catalogue.ready() and "zz-sentinel" in catalogue and catalogue.settled

    assert await eventually(holds, seconds=20)
    assert len(catalogue) == count + 1
    return catalogue


async def walk(query: ModelQuery, order: ModelOrder, cache: ModelCache | None, backward: bool) -> list[Any]:
    """Every page of a listing, forward (`first`) or backward (`last`), as (names, cursors, flags)."""
    pages: list[Any] = []
    cursor: str | None = None
    while True:
        request = PageRequest(last=30, before=cursor) if backward else PageRequest(first=30, after=cursor)
        page = await registry.list_models(EVERY, query, order, request, cache=cache)
        pages.append(([(m.name, c) for m, c in page.items], page.has_next, page.has_previous))
        more = page.has_previous if backward else page.has_next
        if not more or not page.items:
            return pages
        cursor = page.items[0][1] if backward else page.items[-1][1]


QUERIES = [
    ModelQuery(),
    ModelQuery(name_prefix="m00"),
    ModelQuery(name_prefix="m001"),
    ModelQuery(project_names=["p"]),
    ModelQuery(project_names=["p", "q"], owners=["ann"]),
    ModelQuery(tags=["cv", "prod"]),
    ModelQuery(names=["m00003", "m00150", "m00199", "nope"], name_prefix="m00"),
    ModelQuery(name_prefix="m0", project_names=["q"], tags=["nlp"]),
    ModelQuery(created_after=utcnow() - timedelta(days=2), created_before=utcnow() - timedelta(seconds=30)),
]


# slow: ~12s of CPU on this 2-core machine (`make check` leaves it to `make test`)
@pytest.mark.slow
@pytest.mark.parametrize("store_kind", ["local"])
async def test_catalogue_pages_are_the_database_s_pages(app: Starlette) -> None:
    """For every filter and order, forward and backward, the catalogue gives the rows, cursors, flags and
    counts the database gives; a cursor from one continues on the other."""
    models = spread_models(200)
    await models_db.insert_many_models(models)
    await loaded(app, 200)
    cache = services(app).models
    for query in QUERIES:
        for field in (ModelOrderField.CREATED_AT, ModelOrderField.UPDATED_AT, ModelOrderField.NAME):
            for descending in (True, False):
                order = ModelOrder(field, descending)
                for backward in (False, True):
                    mine = await walk(query, order, cache, backward)
                    assert mine == await walk(query, order, None, backward), (query, order, backward)
                first = await registry.list_models(EVERY, query, order, PageRequest(first=5), cache=cache)
                if first.items:  # the catalogue's cursor, continued by the database
                    after = PageRequest(first=5, after=first.items[-1][1])
                    from_db = await registry.list_models(EVERY, query, order, after)
                    from_memory = await registry.list_models(EVERY, query, order, after, cache=cache)
                    assert [c for _, c in from_db.items] == [c for _, c in from_memory.items]
                assert (
                    await first.count()
                    == await (await models_db.page_models(query, order, PageRequest())).count()
                )


# slow: ~4s of CPU on this 2-core machine (`make check` leaves it to `make test`)
@pytest.mark.slow
@pytest.mark.parametrize("store_kind", ["local"])
async def test_a_page_costs_the_page_not_the_matches(app: Starlette) -> None:
    """A page looks at about a page of models however many match: a prefix matching 10x more names, a
    project of half the registry, or the whole registry; a name prefix's first page in a date order sorts
    at most GATHER_LIMIT names or, above that, builds the prefix's own lists once."""
    await models_db.insert_many_models(spread_models(3000))
    catalogue = await loaded(app, 3000)
    cache = services(app).models

    async def examined(
        query: ModelQuery, field: ModelOrderField, after: str | None = None
    ) -> tuple[int, Any]:
        # Under load the stream may reopen (a full reload, served from the database meanwhile): what is
        # measured here is a page served from memory, so wait until the catalogue serves again.
        assert await eventually(catalogue.ready, seconds=20)
        before = catalogue.examined
        page = await registry.list_models(
            EVERY, query, ModelOrder(field), PageRequest(first=PAGE, after=after), cache=cache
        )
        assert len(page.items) == PAGE
        return catalogue.examined - before, page

    for field in (ModelOrderField.CREATED_AT, ModelOrderField.UPDATED_AT, ModelOrderField.NAME):
        small, _ = await examined(ModelQuery(name_prefix="m000"), field)  # 100 names
        assert small <= GATHER_LIMIT + PAGE + 1
        await examined(ModelQuery(name_prefix="m00"), field)  # 1,000 names: first page builds its lists
        big, page = await examined(ModelQuery(name_prefix="m00"), field)
        assert big == PAGE + 1, field
        nxt, _ = await examined(ModelQuery(name_prefix="m00"), field, page.items[-1][1])
        assert nxt == PAGE + 1, field
        for query in (ModelQuery(), ModelQuery(project_names=["p"]), ModelQuery(owners=["ann", "bob"])):
            cost, _ = await examined(query, field)
            assert cost == PAGE + 1, (query, field)
    # A condition without lists of its own is checked on the way: the cost is what it skips.
    cost, _ = await examined(ModelQuery(project_names=["p"], owners=["ann"]), ModelOrderField.NAME)
    assert PAGE < cost < 6 * PAGE


@pytest.mark.parametrize("store_kind", ["local"])
async def test_pages_follow_every_writer(
    app: Starlette, gql: GraphQLClient, stores: Stores, bucket: str
) -> None:
    """A caller's own registration is on its very next page; a model written straight to the database (by
    another instance) appears once the change stream reports it."""
    catalogue = await loaded(app, 0)
    stores.put(bucket, "models/resnet.bin", b"x" * 10)
    newest = "{ models(first: 3) { nodes { name } totalCount } }"
    for i in range(5):
        made = await register(gql, reg_input(bucket, name=f"r{i}"), **ALICE)
        assert made["__typename"] == "ModelVersion"
        page = (await gql(newest, **ALICE))["models"]
        assert page["nodes"][0] == {"name": f"r{i}"} and page["totalCount"] == i + 2
    assert len(catalogue) == 6
    await models_db.insert_model(RegisteredModel(name="elsewhere", project_name="p", owner="o"))

    async def seen() -> bool:
        return bool((await gql(newest, **ALICE))["models"]["nodes"][0] == {"name": "elsewhere"})

    assert await eventually(seen, seconds=5)
    assert len(catalogue) == 7


async def test_a_registration_s_hint_that_a_name_is_new_decides_nothing(
    app: Starlette, gql: GraphQLClient, stores: Stores, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name the loaded catalogue does not hold is inserted first; when the unique index says it exists
    (written elsewhere, its change not reported yet) the version joins that model, and a model of a
    project the caller cannot read is refused as a taken name that names neither project."""
    catalogue = await loaded(app, 0)
    monkeypatch.setattr(services(app).models, "changed", lambda model_id: None)  # reports lag behind
    await models_db.insert_model(RegisteredModel(name="elsewhere", project_name="vision", owner="alice"))
    assert catalogue.loaded and "elsewhere" not in catalogue
    stores.put(bucket, "models/resnet.bin", b"x" * 10)
    made = await register(gql, reg_input(bucket, name="elsewhere"), **ALICE)
    assert made["__typename"] == "ModelVersion" and made["version"] == 1, made
    assert await RegisteredModel.find(RegisteredModel.name == "elsewhere").count() == 1

    req = RegisterRequest(name="elsewhere", project_name="other", owner="bob", bucket=bucket, key="k")
    bob = Principal("bob", None, grants={"other": ProjectRole.ENGINEER})
    with pytest.raises(InvalidInput) as refused:
        await registration._model_for(req, bob, Scope(bob, frozenset({"other"})), likely_new=True)
    assert refused.value.field == "name" and "vision" not in str(refused.value)
    assert "other" not in str(refused.value)


async def test_a_settle_applies_the_changes_reported_when_it_began(monkeypatch: pytest.MonkeyPatch) -> None:
    """Changes reported while a settle reads are left for the next one: under a stream of writes a settle
    (a page's, or a registration's warm-up) ends after the reads it began with."""
    catalogue = Catalogue()
    catalogue.opened()
    monkeypatch.setattr(catalogue, "_reload", False)
    first = PydanticObjectId()
    catalogue.changed(first)
    reads: list[list[Any]] = []

    async def model_keys(ids: list[Any]) -> list[dict[str, Any]]:
        reads.append(ids)
        catalogue.changed(PydanticObjectId())  # another write reported while this read is out
        return []

    monkeypatch.setattr(models_db, "model_keys", model_keys)
    await catalogue._settle()
    assert reads == [[first]] and len(catalogue._pending) == 1 and first not in catalogue._pending
