"""HTTP semantics of the download routes (RFC 9110): HEAD, unusable ranges, If-Range, If-None-Match, and
bad input that must be a 4xx with a JSON body, never an untyped 500."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.http.test_downloads import register, ticket
from tests.servers import GraphQLClient, Stores

DATA = bytes(range(256)) * 40  # 10,240 bytes


def events(db: Any) -> int:
    return int(db.download_events.count_documents({}))


async def test_head_reads_nothing_records_nothing_and_keeps_the_ticket(
    gql: GraphQLClient, http: httpx.AsyncClient, stores: Stores, bucket: str, db: Any
) -> None:
    """HEAD on a ticket and on the one-step route gives GET's headers, uses no ticket and records nothing."""
    await register(gql, stores, bucket, DATA)
    t = await ticket(gql)
    before = events(db)
    head = await http.head(t["url"])
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(DATA)) and head.headers["etag"]
    ranged = await http.head(t["url"], headers={"Range": "bytes=0-9"})
    assert ranged.status_code == 206 and ranged.headers["content-range"] == f"bytes 0-9/{len(DATA)}"
    one_step = await http.head("/models/m/download", headers={"X-Engineer-ID": "alice"})
    assert one_step.status_code == 200 and one_step.headers["content-length"] == str(len(DATA))
    assert events(db) == before
    get = await http.get(t["url"])
    assert get.status_code == 200 and get.content == DATA


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "items=0-5", "garbage", "bytes=5-2", "bytes=\u00b2-"])
async def test_unusable_ranges_are_ignored(
    gql: GraphQLClient, http: httpx.AsyncClient, stores: Stores, bucket: str, header: str
) -> None:
    """A Range the server cannot use (several ranges, other units, garbage) gives the whole object, 200."""
    await register(gql, stores, bucket, DATA)
    resp = await http.get("/models/m/download", headers={"Range": header.encode(), "X-Engineer-ID": "a"})
    assert resp.status_code == 200 and resp.content == DATA


async def test_if_range_and_if_none_match(
    gql: GraphQLClient, http: httpx.AsyncClient, stores: Stores, bucket: str, db: Any
) -> None:
    """If-Range with the current ETag gives the range, with another the whole object; If-None-Match 304."""
    await register(gql, stores, bucket, DATA)
    who = {"X-Engineer-ID": "alice"}
    etag = (await http.head("/models/m/download", headers=who)).headers["etag"]
    same = await http.get("/models/m/download", headers={**who, "Range": "bytes=10-19", "If-Range": etag})
    assert same.status_code == 206 and same.content == DATA[10:20]
    other = await http.get("/models/m/download", headers={**who, "Range": "bytes=10-19", "If-Range": '"old"'})
    assert other.status_code == 200 and other.content == DATA
    before = events(db)
    cached = await http.get("/models/m/download", headers={**who, "If-None-Match": etag})
    assert cached.status_code == 304 and cached.content == b"" and cached.headers["etag"] == etag
    t = await ticket(gql)
    assert (await http.get(t["url"], headers={"If-None-Match": etag})).status_code == 304
    assert events(db) == before + 1  # the ticket's ISSUED event only: a 304 is no download
    assert (await http.get(t["url"])).status_code == 200  # and the ticket was not used up


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/downloads/abc.%C3%A9", {}),
        ("/downloads/%FF%FE", {}),
        ("/objects/abc.%C3%A9", {}),
        ("/objects/" + "A" * 5000, {}),
        ("/models/m/download?version=%C2%B2", {}),
        ("/models/m/download?version=%D9%A1", {}),
        ("/models/m/download?version=99999999999999999999", {}),
        ("/models/m/download?alias=%00", {}),
        ("/models/%FF/download", {}),
        ("/models/m/download", {"Range": "bytes=" + "9" * 5000 + "-"}),
        ("/models/m/download", {"Range": "bytes=-" + "9" * 5000}),
        ("/models/m/download", {"X-Engineer-ID": "x" * 5000}),
        ("/models/m/download", {"If-None-Match": "\u00ff" * 10}),
    ],
)
async def test_bad_route_input_is_a_json_4xx(
    gql: GraphQLClient,
    http: httpx.AsyncClient,
    stores: Stores,
    bucket: str,
    path: str,
    headers: dict[str, str],
) -> None:
    """Malformed paths, query values and headers get a 4xx (or the object) with JSON, never a 500."""
    await register(gql, stores, bucket, DATA)
    sent = {"X-Engineer-ID": "alice", **headers}
    resp = await http.get(path, headers={k: v.encode() for k, v in sent.items()})
    assert resp.status_code < 500, resp.text
    if resp.status_code >= 400:
        body = resp.json()["error"]
        assert body["code"] and body["message"] and "/tmp" not in resp.text and "://" not in resp.text


@pytest.mark.parametrize(
    "body",
    [
        b'"x"',
        b"[1, 2]",
        b"\xff\xfe{}",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"query": "{ __typename }", "variables": ' + b'{"a":' * 10_000 + b"1" + b"}" * 10_001,
        b"null",
        b'{"query": "query($a: String!) { model(name: $a) { name } }", "variables": {"a": "x\\udc00"}}',
    ],
)
async def test_bad_graphql_bodies_are_typed(http: httpx.AsyncClient, body: bytes) -> None:
    """Bodies that are not a JSON object (a string, invalid UTF-8, nested 100k deep) or hold a string no
    UTF-8 holds (a lone surrogate escape, which the database could neither store nor match) get a 400 with
    a code."""
    resp = await http.post(
        "/graphql", content=body, headers={"content-type": "application/json", "X-Engineer-ID": "a"}
    )
    assert resp.status_code == 400, resp.text
    assert resp.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        (
            "query($f: DownloadFilter) { downloads(first: 1, filter: $f) { totalCount } }",
            {"f": {"since": "2026-01-01T00:00:00"}},
        ),
        (
            "mutation($i: RegisterModelInput!) { registerModel(input: $i) { __typename } }",
            {"i": {"name": "deep", "projectName": "p", "bucket": "bkt", "key": "k", "metadata": None}},
        ),
    ],
)
async def test_bad_graphql_values_are_typed(
    gql: GraphQLClient, query: str, variables: dict[str, Any]
) -> None:
    """A naive datetime and metadata nested 30 deep are typed errors, not INTERNAL_SERVER_ERROR (500 deep
    is refused with the body, see above)."""
    if "i" in variables:
        deep: Any = 1
        for _ in range(30):
            deep = {"a": deep}
        variables["i"]["metadata"] = deep
    body = await gql.raw(query, variables, **{"X-Engineer-ID": "alice"})
    codes = [e.get("extensions", {}).get("code") for e in body.get("errors", [])]
    typed = [r for r in (body.get("data") or {}).values() if r and r.get("__typename") != "ModelVersion"]
    assert codes or typed, body
    assert "INTERNAL_SERVER_ERROR" not in codes, body
