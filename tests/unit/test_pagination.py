"""Cursors and filter merging used by every connection."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from bson import ObjectId

from graphql_api.db.common import merge_filters
from graphql_api.db.paging import keyset_branches, pinned
from graphql_api.errors import InvalidInput
from graphql_api.pagination import decode_cursor, encode_cursor


def test_cursor_round_trip_and_tampering() -> None:
    """A cursor carries datetimes and ObjectIds exactly; one made for another order or shape is refused."""
    when, oid = datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=UTC), ObjectId()
    cursor = encode_cursor("STARTED_AT_DESC", [when, oid])
    assert decode_cursor(cursor, "STARTED_AT_DESC", 2) == [when, oid]
    for bad, order, arity in [
        (cursor, "NAME_ASC", 2),
        (cursor, "STARTED_AT_DESC", 3),
        ("%%%", "X", 1),
        ("e30", "X", 1),
    ]:
        with pytest.raises(InvalidInput) as err:
            decode_cursor(bad, order, arity)
        assert err.value.field == "after"


def test_merge_filters_stays_flat() -> None:
    """Ranges on one field merge to the tightest bounds; only a non-range clash falls back to $and."""
    a = datetime(2026, 1, 1, tzinfo=UTC)
    b = datetime(2026, 2, 1, tzinfo=UTC)
    merged = merge_filters(
        {"engineer": "x", "t": {"$gte": a, "$lt": b}}, {"t": {"$gte": b.replace(day=15, month=1)}}
    )
    assert merged == {"engineer": "x", "t": {"$gte": datetime(2026, 1, 15, tzinfo=UTC), "$lt": b}}
    assert merge_filters({}, {"t": {"$gte": a}}) == {"t": {"$gte": a}}
    assert merge_filters({"name": "m"}, {"name": {"$gte": "a"}}) == {
        "$and": [{"name": "m"}, {"name": {"$gte": "a"}}]
    }


def test_keyset_branches_have_no_top_level_or() -> None:
    """Rows after (t, id) in descending order: t equal (id compared in Python, below), then t below; no
    `$or`, and the tie's equality replaces a condition on t that it meets, in one flat filter."""
    t, oid = datetime(2026, 1, 1, tzinfo=UTC), ObjectId()
    ties, beyond = keyset_branches([("t", -1), ("_id", -1)], [t, oid])
    assert (ties.query, ties.beyond, beyond.query, beyond.beyond) == (
        {"t": t}, ("_id", -1, oid), {"t": {"$lt": t}}, None
    )  # fmt: skip
    since = {
        "e": "x",
        "t": {"$gte": datetime(2025, 1, 1, tzinfo=UTC), "$lt": datetime(2027, 1, 1, tzinfo=UTC)},
    }
    assert pinned(since, ties.query) == {"e": "x", "t": t}
    assert pinned({"t": {"$gt": t}}, ties.query) is None  # the cursor is outside the range: no ties
    assert pinned({"d": {"$ne": None}}, {"d": 2.0}) == {"d": 2.0}
    assert pinned({"t": {"$in": [t]}}, ties.query) == {"$and": [{"t": {"$in": [t]}}, {"t": t}]}
    naive = datetime(2026, 1, 1)  # as the database gives it back
    assert pinned({"t": {"$lte": naive}}, ties.query) == {"t": t}
