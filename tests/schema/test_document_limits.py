"""Document limits: depth, aliases and expanded fields measured once per fragment, so that a document of
nested fragment spreads is refused at once, over HTTP and WebSocket, with or without a token."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from graphql import parse, specified_rules, validate

from graphql_api.auth import create_token
from graphql_api.db import connect
from graphql_api.roles import Role
from graphql_api.schema import build_schema
from graphql_api.schema.document_limits import DocumentLimits, DocumentShapes, Shape, check
from tests.servers import LiveServer, make_settings

LEVELS = (6, 8, 12)
NONCES = itertools.count()


def nested(
    levels: int, inline: bool = False, fanout: int = 10, leaf: str = "__typename", nonce: int = 0
) -> str:
    """Fragment F1 spreads F2 `fanout` times, F2 spreads F3 as often, ... (each spread inside an inline
    fragment when `inline`): `fanout ** (levels - 1)` leaves from a document of a few hundred bytes. The
    operation is named after `nonce`, so that no parser or validation cache holds a fresh one."""
    spread = (lambda i: f"... on Query {{ ...F{i} }}") if inline else (lambda i: f"...F{i}")
    parts = [f"query Nested{nonce} {{ ...F1 }}"]
    for i in range(1, levels):
        parts.append(f"fragment F{i} on Query {{ " + " ".join([spread(i + 1)] * fanout) + " }")
    parts.append(f"fragment F{levels} on Query {{ {leaf} }}")
    return "\n".join(parts)


def shape(text: str) -> Shape:
    document = parse(text)
    (operation,) = [d for d in document.definitions if d.kind == "operation_definition"]
    return DocumentShapes(document).operation(operation)  # type: ignore[arg-type]


PLAIN = """{ a: models(first: 5) { edges { node { name versions(first: 3) { nodes { version } } } } }
  b: models(first: 5) { totalCount } }"""
NAMED = """{ a: models(first: 5) { ...Edges } b: models(first: 5) { ...Total } }
fragment Edges on ModelConnection { edges { node { ...Model } } }
fragment Model on Model { name versions(first: 3) { ...Versions } }
fragment Versions on ModelVersionConnection { nodes { version } }
fragment Total on ModelConnection { totalCount }"""
INLINE = """{ a: models(first: 5) { ... on ModelConnection { edges { ... { node { name
  versions(first: 3) { ... on ModelVersionConnection { nodes { version } } } } } } } }
  ... { b: models(first: 5) { ... { totalCount } } } }"""


def test_named_and_inline_fragments_measure_like_the_plain_document() -> None:
    """Depth, expanded fields and aliases of a document are the same written plainly, with named fragments
    or with inline fragments."""
    assert shape(PLAIN) == shape(NAMED) == shape(INLINE) == Shape(depth=5, fields=9, aliases=2)


def test_spreads_multiply_a_fragment_measured_once() -> None:
    """A fragment spread N times counts N times its fields and aliases, yet its text is walked once: the
    work is the document's selections, whatever the expansion."""
    for levels in LEVELS:
        document = parse(nested(levels, leaf="x: __typename y: __typename"))
        shapes = DocumentShapes(document)
        found = shapes.operation(document.definitions[0])  # type: ignore[arg-type]
        assert found == Shape(depth=0, fields=2 * 10 ** (levels - 1), aliases=2 * 10 ** (levels - 1))
        assert shapes.visits == 1 + 10 * (levels - 1) + 2  # each selection of the text, once


def test_depth_counts_through_fragments_and_skips_introspection() -> None:
    """Depth is the deepest field level, through spreads and inline fragments; fields under `__schema` and
    the like do not count (GraphiQL's introspection query nests deeper than the limit)."""
    assert shape("{ a { b { c } } }").depth == 2
    assert shape("{ a { ...F } } fragment F on T { b { ... on T { c { d } } } }").depth == 3
    assert shape("{ __schema { types { fields { type { ofType { name } } } } } a }").depth == 0


def test_fragment_cycles_are_measured_without_looping() -> None:
    """A cycle of spreads is measured (the spread closing it adds nothing) and refused by graphql-core."""
    text = "{ ...A } fragment A on Query { __typename ...B } fragment B on Query { __typename ...A }"
    assert shape(text).fields == 2
    errors = validate(build_schema()._schema, parse(text), specified_rules)
    assert any("cycle" in e.message.lower() or "itself" in e.message.lower() for e in errors)


def test_a_long_chain_of_fragments_does_not_exhaust_the_stack() -> None:
    """Fragments are measured without recursion: a chain of 3,000 fragments each spreading the next."""
    chain = " ".join(f"fragment F{i} on Query {{ ...F{i + 1} }}" for i in range(3000))
    found = shape("{ ...F0 } " + chain + " fragment F3000 on Query { __typename }")
    assert found.fields == 1


def test_each_limit_has_its_code() -> None:
    """Over the depth, alias or expanded-field limit: DEPTH_LIMIT_EXCEEDED, ALIAS_LIMIT_EXCEEDED,
    FIELD_LIMIT_EXCEEDED, counted through fragments."""
    limits = DocumentLimits(max_depth=2, max_aliases=3, max_fields=50)
    codes = lambda text: [e.extensions["code"] for e in check(parse(text), limits)]  # noqa: E731
    assert codes("{ a { b { c } } }") == []
    assert codes("{ a { b { c { d } } } }") == ["DEPTH_LIMIT_EXCEEDED"]
    assert codes("{ ...F ...F } fragment F on Query { x: a y: a }") == ["ALIAS_LIMIT_EXCEEDED"]
    assert codes(nested(3, leaf="a")) == ["FIELD_LIMIT_EXCEEDED"]  # 100 fields in 3 fragments


@pytest.mark.parametrize("levels", LEVELS)
@pytest.mark.parametrize("inline", [False, True], ids=["named", "inline"])
async def test_nested_spreads_are_refused_before_validating(levels: int, inline: bool) -> None:
    """The schema refuses the nested-spread document with FIELD_LIMIT_EXCEEDED, checked before graphql-core
    validates it, in well under 50 ms including parsing (Strawberry's limiters took 0.4-0.9 s at six levels
    and did not finish at eight)."""
    schema = build_schema()
    await schema.execute("{ __typename }")  # warm
    took = []
    for _ in range(3):
        started = time.perf_counter()
        result = await schema.execute(nested(levels, inline, nonce=next(NONCES)))  # a new text: no cache
        took.append(time.perf_counter() - started)
        assert [e.extensions["code"] for e in result.errors or [] if e.extensions] == ["FIELD_LIMIT_EXCEEDED"]
    assert min(took) < 0.05, took


async def test_overlapping_field_checks_stop_within_their_budget() -> None:
    """graphql-core's check that same-named fields merge compares them pairwise: 330 fragments each selecting
    `models { totalCount }` (within the token limit) stop at the bounded budget instead of validating for
    1.5 s: under 0.25 s including parsing 16 KB, with margin for a shared machine (about 30 ms when quiet)."""
    schema = build_schema()
    text = " ".join(f"fragment F{i} on Query {{ models {{ totalCount }} }}" for i in range(330))
    spreads = "{ " + " ".join(f"...F{i}" for i in range(330)) + " } "
    await schema.execute("{ __typename }")  # warm
    took = []
    for attempt in range(3):
        started = time.perf_counter()
        result = await schema.execute(f"{spreads}{text} # {attempt}")  # a new text: no cache
        took.append(time.perf_counter() - started)
        assert result.errors and result.errors[0].message == "Validation aborted."
    assert min(took) < 0.25, took


# A live server, so that a blocked event loop would delay the concurrent query for real.


@pytest.fixture(scope="module", params=["off", "enforce"])
def abuse_server(
    request: pytest.FixtureRequest, mongo_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LiveServer, str]]:
    settings = make_settings(
        "local", mongo_uri, None, Path(tmp_path_factory.mktemp("limits")), auth="token",
        persisted_operations=request.param,
    )  # fmt: skip

    async def token() -> str:
        async with connect(str(settings.mongo_uri), settings.mongo_db):
            value, _ = await create_token("reader", "rita", Role.READER, "test")
            return value

    value = asyncio.run(token())
    with LiveServer(settings) as server:
        yield server, value


async def _http(http: httpx.AsyncClient, query: str, token: str | None) -> tuple[float, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    started = time.perf_counter()
    resp = await http.post("/graphql", json={"query": query}, headers=headers)
    return time.perf_counter() - started, resp.json()


async def _ws(url: str, query: str, token: str | None) -> tuple[float, dict[str, Any]]:
    """Sends `query` over graphql-transport-ws; the time until the server answers it (or refuses the
    socket), and that answer."""
    from websockets.asyncio.client import connect as ws_connect
    from websockets.exceptions import ConnectionClosed

    ws_url = url.replace("http://", "ws://") + "/graphql"
    async with ws_connect(ws_url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        payload = {"Authorization": f"Bearer {token}"} if token else {}
        started = time.perf_counter()
        await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        try:
            ack = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert ack["type"] == "connection_ack", ack
            started = time.perf_counter()
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))
            answer: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 30))
        except ConnectionClosed as closed:
            code, reason = (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd else (None, "")
            answer = {"closed": code, "reason": reason}
        return time.perf_counter() - started, answer


def _refused(answer: dict[str, Any]) -> bool:
    """A refusal before execution: the field limit (or an unregistered operation in enforce mode), or,
    without a token, the socket itself refused."""
    if "closed" in answer:
        return answer["closed"] in (4401, 4403)
    if answer.get("type") == "error":  # graphql-transport-ws: errors before execution
        errors, data = answer["payload"], None
    else:
        body = answer.get("payload", answer)
        errors, data = body.get("errors") or [], body.get("data")
    codes = {(e.get("extensions") or {}).get("code") for e in errors}
    return bool(codes & {"FIELD_LIMIT_EXCEEDED", "OPERATION_NOT_PERSISTED"}) and data is None


@pytest.mark.parametrize("transport", ["http", "ws"])
@pytest.mark.parametrize("with_token", [True, False], ids=["token", "no-token"])
async def test_nested_spreads_are_refused_at_once_and_others_stay_fast(
    abuse_server: tuple[LiveServer, str], transport: str, with_token: bool
) -> None:
    """The nested-spread document (6, 8 and 12 levels; named and inline) is refused in under 50 ms over
    HTTP and WebSocket, with and without a token, in persisted-operation modes off and enforce, while a
    concurrent trivial query answers in under 100 ms (best of three tries each: the machine is shared)."""
    server, token = abuse_server
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        await _http(http, "{ __typename }", token)  # the connection is open before timing
        for levels in LEVELS:
            for inline in (False, True):
                refusals, trivials = [], []
                for _ in range(3):
                    document = nested(levels, inline, nonce=next(NONCES))
                    send = (
                        _http(http, document, token if with_token else None)
                        if transport == "http"
                        else _ws(server.url, document, token if with_token else None)
                    )
                    (took, answer), (quick, trivial) = await asyncio.gather(
                        send, _http(http, "{ __typename }", token)
                    )
                    assert _refused(answer), answer
                    assert "errors" not in trivial or trivial["errors"][0]["extensions"]["code"] == (
                        "OPERATION_NOT_PERSISTED"
                    )
                    refusals.append(took)
                    trivials.append(quick)
                assert min(refusals) < 0.05, (levels, inline, refusals)
                assert min(trivials) < 0.1, (levels, inline, trivials)


@pytest.mark.parametrize("transport", ["http", "ws"])
async def test_the_token_limit_bounds_parsing_on_both_transports(
    abuse_server: tuple[LiveServer, str], transport: str
) -> None:
    """A document of more tokens than MODELHUB_MAX_QUERY_TOKENS is refused while parsing with
    GRAPHQL_PARSE_FAILED over HTTP; over the WebSocket the socket is closed with 4400 and the reason, as
    graphql-transport-ws has it for a document that does not parse (it got `complete` alone)."""
    server, token = abuse_server
    document = "{ " + "__typename " * 6_000 + "}"
    if transport == "http":
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            took, answer = await _http(http, document, token)
        errors = answer["errors"]
    else:
        took, answer = await _ws(server.url, document, token)
        if "closed" in answer:  # the protocol's answer to a document that does not parse: close, 4400
            assert answer["closed"] == 4400 and "token" in answer["reason"].lower(), answer
            assert took < 5  # refused while parsing (a loaded CI machine may take a second or two)
            return
        errors = answer["payload"] if answer["type"] == "error" else answer["payload"]["errors"]
    codes = {e["extensions"]["code"] for e in errors}
    assert codes <= {"GRAPHQL_PARSE_FAILED", "OPERATION_NOT_PERSISTED"} and codes, errors
    if "GRAPHQL_PARSE_FAILED" in codes:
        assert "token" in errors[0]["message"].lower()
    assert took < 5  # refused while parsing (a loaded CI machine may take a second or two)
