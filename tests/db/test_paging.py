"""Keyset pages: string windows on model names and time windows on model dates give exactly the rows the
unwindowed query gives."""

from __future__ import annotations

import itertools
import random
from datetime import timedelta
from typing import Any

import pytest
from beanie import PydanticObjectId

from graphql_api.db import models as models_db
from graphql_api.db.paging import MAX_STRING_WINDOWS, NAME_ALPHABET, string_windows
from graphql_api.documents import RegisteredModel, utcnow
from tests.servers import GraphQLClient


def test_string_windows_grow_from_the_start_and_stay_below_the_end() -> None:
    """Bounds rise strictly, all above the start and below the end; the first ones stay close to the start."""
    bounds = string_windows("m01", "m02")
    assert bounds[:4] == ["m01-", "m01.", "m010", "m014"]
    assert all(a < b for a, b in itertools.pairwise(bounds))
    assert all("m01" < b < "m02" for b in bounds) and len(bounds) <= MAX_STRING_WINDOWS
    after_cursor = string_windows("m01050", "m02")
    assert after_cursor[0] == "m01050-" and all("m01050" < b < "m02" for b in after_cursor)
    assert string_windows("", None)[0] == NAME_ALPHABET[0]
    assert string_windows("naïve", None) == []  # outside the alphabet: no windows, the plain query


NAMES = ["m0", "m01", "m01-x", "m01.y", "m01/z", "m01A", "m01_q", "m01z", "m02", "n", "m1"] + [
    f"m01{i:03d}" for i in range(150)
]
PAGE = """query($f: ModelFilter, $after: String, $first: Int) {
  models(filter: $f, orderBy: {field: NAME, direction: ASC}, first: $first, after: $after) {
    nodes { name } pageInfo { hasNextPage endCursor } } }"""


@pytest.mark.parametrize("store_kind", ["local"])
@pytest.mark.parametrize("first", [3, 60])
async def test_name_pages_match_the_sorted_names(gql: GraphQLClient, first: int) -> None:
    """Walking name-ordered pages (with and without a prefix, any page size) yields every matching name
    once, in order, as sorting them would."""
    shuffled = NAMES[:]
    random.Random(first).shuffle(shuffled)
    await models_db.insert_many_models(
        [RegisteredModel(name=n, project_name="p", owner="o") for n in shuffled]
    )
    for flt, expected in [
        ({"namePrefix": "m01"}, sorted(n for n in NAMES if n.startswith("m01"))),
        ({}, sorted(NAMES)),
        ({"projectNames": ["p"], "namePrefix": "m01"}, sorted(n for n in NAMES if n.startswith("m01"))),
    ]:
        seen: list[str] = []
        after: Any = None
        while True:
            page = (await gql(PAGE, {"f": flt, "after": after, "first": first}))["models"]
            seen += [n["name"] for n in page["nodes"]]
            if not page["pageInfo"]["hasNextPage"]:
                break
            after = page["pageInfo"]["endCursor"]
        assert seen == expected, flt


TIME_PAGE = """query($order: ModelOrder, $after: String, $f: ModelFilter) {
  models(orderBy: $order, first: 7, after: $after, filter: $f) {
    nodes { name } pageInfo { hasNextPage endCursor } } }"""


@pytest.mark.parametrize("store_kind", ["local"])
async def test_newest_first_pages_across_time_windows(gql: GraphQLClient) -> None:
    """Newest-first model pages (created and updated) over dates spread across every time window (minutes
    to years, ties included) yield every model once, in the order sorting them would."""
    now, rng = utcnow(), random.Random(7)
    offsets = [timedelta(minutes=10), timedelta(hours=5), timedelta(days=3), timedelta(days=20),
               timedelta(days=200), timedelta(days=800)]  # fmt: skip
    models = []
    for i in range(60):
        created = now - rng.choice(offsets) - timedelta(seconds=rng.choice([0, 0, 1, 30]))
        updated = created + timedelta(days=rng.choice([0, 0, 2, 400]))
        models.append(RegisteredModel(id=PydanticObjectId(), name=f"t{i:02d}", project_name=rng.choice("pq"), owner="o",
                                      created_at=created, updated_at=min(updated, now)))  # fmt: skip
    await models_db.insert_many_models(models)
    for field, key in (("CREATED_AT", "created_at"), ("UPDATED_AT", "updated_at")):
        for flt, chosen in (
            ({}, models),
            ({"projectNames": ["p"]}, [m for m in models if m.project_name == "p"]),
        ):
            expected = [m.name for m in sorted(chosen, key=lambda m: (getattr(m, key), m.id), reverse=True)]
            seen: list[str] = []
            after: Any = None
            while True:
                variables = {"order": {"field": field, "direction": "DESC"}, "after": after, "f": flt}
                page = (await gql(TIME_PAGE, variables))["models"]
                seen += [n["name"] for n in page["nodes"]]
                if not page["pageInfo"]["hasNextPage"]:
                    break
                after = page["pageInfo"]["endCursor"]
            assert seen == expected, (field, flt)
