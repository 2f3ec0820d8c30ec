"""An unexpected error raised outside the operation's hooks (a bug in pricing, before execution) is masked
like any other: logged in full on the server, `Internal server error.` with INTERNAL_SERVER_ERROR to the
client."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from graphql_api.schema import cost
from tests.servers import GraphQLClient


@pytest.mark.parametrize("store_kind", ["local"])
async def test_a_bug_in_pricing_is_masked(
    gql: GraphQLClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A pricing function that raises (here an OverflowError naming a path) answers INTERNAL_SERVER_ERROR
    with the generic message, never the exception's text; the server's log has it."""

    def broken(*_args: Any, **_kwargs: Any) -> int:
        raise OverflowError("date value out of range at /srv/secret")

    monkeypatch.setattr(cost, "stats_price", broken)
    with caplog.at_level(logging.ERROR):
        body = await gql.raw("{ downloadStats(groupBy: [MODEL]) { totalRows } }", **{"X-Engineer-ID": "a"})
    (error,) = body["errors"]
    assert error["message"] == "Internal server error."
    assert error["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    assert "secret" not in str(body) and "out of range" not in str(body)
    assert "/srv/secret" in caplog.text
