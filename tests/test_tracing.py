"""OpenTelemetry traces: with an OTLP endpoint set, a request's spans reach an OTLP/HTTP receiver on
loopback as one tree continuing the caller's traceparent; without one, nothing is traced."""

from __future__ import annotations

import asyncio
import gzip
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from graphql_api.app import create_app
from graphql_api.tracing import Tracing
from tests.servers import GraphQLClient, Stores, free_port, make_settings

trace_service = pytest.importorskip(
    "opentelemetry.proto.collector.trace.v1.trace_service_pb2", reason="install requirements/dev.txt"
)

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
SERVER_KIND, CLIENT_KIND = 2, 3  # opentelemetry.proto.trace.v1.Span.SpanKind


class Receiver:
    """An OTLP/HTTP trace receiver on a loopback port: keeps every ExportTraceServiceRequest body."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path == "/v1/traces":
                    bodies.append(body)
                reply = trace_service.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1/traces"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def spans(self) -> list[tuple[dict[str, Any], Any]]:
        """(resource attributes, span) for every span received."""
        found = []
        for body in self.bodies:
            request = trace_service.ExportTraceServiceRequest()
            request.ParseFromString(body)
            for resource_spans in request.resource_spans:
                resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    found += [(resource, span) for span in scope_spans.spans]
        return found


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    server.thread.start()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()


def _attributes(span: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for attribute in span.attributes:
        value = attribute.value
        out[attribute.key] = value.string_value or value.int_value or value.bool_value
    return out


def test_tracing_is_off_without_an_endpoint() -> None:
    """No OTLP endpoint, OTEL_SDK_DISABLED or OTEL_TRACES_EXPORTER=none: no tracing at all."""
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    assert Tracing.from_env({}) is None
    assert Tracing.from_env({**endpoint, "OTEL_SDK_DISABLED": "true"}) is None
    assert Tracing.from_env({**endpoint, "OTEL_TRACES_EXPORTER": "none"}) is None
    tracing = Tracing.from_env(endpoint)
    assert tracing is not None
    tracing.shutdown()


async def test_a_graphql_request_is_one_span_tree(
    receiver: Receiver, mongo_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A GraphQL query sent with a traceparent: the server span continues the caller's trace and is returned
    in the response's traceparent; under it the operation's span (type, name, outcome) and under that the
    MongoDB commands; a variable's value is in no span, and commands outside requests are not traced."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.url)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    settings = make_settings("local", mongo_uri, None, tmp_path / "data")
    app = create_app(settings)
    query = "query FindModel($name: String!) { model(name: $name) { name } models { totalCount } }"
    headers = {"traceparent": f"00-{TRACE}-{PARENT}-01", "X-Engineer-ID": "alice"}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            resp = await http.post(
                "/graphql", json={"query": query, "variables": {"name": "secret-name-7f3a"}}, headers=headers
            )
        await asyncio.sleep(1.2)  # the health watch pings MongoDB and the store every half second
    assert resp.status_code == 200 and resp.json()["data"]["models"]["totalCount"] == 0
    version, trace_id, server_span_id, flags = resp.headers["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", TRACE, "01") and server_span_id != PARENT

    assert all(b"secret-name-7f3a" not in body for body in receiver.bodies)
    orphans = [s.name for _, s in receiver.spans() if s.kind == CLIENT_KIND and not s.parent_span_id]
    assert not orphans  # no trace of its own for each health ping or background poll
    spans = [(resource, span) for resource, span in receiver.spans() if span.trace_id.hex() == TRACE]
    assert {resource["service.name"] for resource, _ in spans} == {"modelhub"}
    by_id = {span.span_id.hex(): span for _, span in spans}
    (server,) = [s for s in by_id.values() if s.kind == SERVER_KIND]
    assert server.span_id.hex() == server_span_id and server.parent_span_id.hex() == PARENT
    assert _attributes(server)["http.response.status_code"] == 200
    (operation,) = [s for s in by_id.values() if s.name == "query FindModel"]
    assert operation.parent_span_id == server.span_id
    assert _attributes(operation) == {
        "graphql.operation.type": "query",
        "graphql.operation.name": "FindModel",
        "modelhub.outcome": "success",
        "modelhub.cost": _attributes(operation)["modelhub.cost"],
    }
    assert _attributes(operation)["modelhub.cost"] >= 2  # two root fields
    commands = [s for s in by_id.values() if s.kind == CLIENT_KIND and s.name.startswith(settings.mongo_db)]
    assert commands, [s.name for s in by_id.values()]
    under_operation = []
    for command in commands:  # each under the request's span; the query's own under the operation's
        ancestor = command
        while ancestor.span_id not in (operation.span_id, server.span_id):
            ancestor = by_id[ancestor.parent_span_id.hex()]
        if ancestor.span_id == operation.span_id:
            under_operation.append(command.name)
        assert _attributes(command)["db.system"] == "mongodb"
    # Reading who the caller is (its projects' grants) may run before the operation starts; the model and
    # the count are read by the operation.
    assert under_operation, [c.name for c in commands]


REGISTER = """mutation Register($input: RegisterModelInput!) {
  registerModel(input: $input) { __typename ... on ModelVersion { version } }
}"""
REQUEST = """mutation Fetch($input: RequestDownloadInput!) {
  requestDownload(input: $input) { __typename ... on DownloadTicket { url } }
}"""


async def test_a_registration_and_a_download_are_span_trees(
    receiver: Receiver, mongo_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registration is a mutation span with its MongoDB writes beneath; a streamed download is a server
    span (its ticket redacted from the path) over a `download stream` span that records the bytes sent and
    the outcome, with the store read and the event's MongoDB writes beneath it; the ticket itself is in no
    span."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.url)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    settings = make_settings("local", mongo_uri, None, tmp_path / "data")
    data = b"w" * 300_000
    Stores("local", settings).put("bucket-t", "m/weights.bin", data)
    app = create_app(settings)
    who = {"X-Engineer-ID": "alice"}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            gql = GraphQLClient(http)
            variables = {"name": "m", "projectName": "p", "bucket": "bucket-t", "key": "m/weights.bin"}
            made = await gql(REGISTER, {"input": variables}, **who)
            assert made["registerModel"]["__typename"] == "ModelVersion", made
            asked = await gql(REQUEST, {"input": {"name": "m", "mode": "STREAM"}}, **who)
            url = asked["requestDownload"]["url"]
            got = await http.get(url)
            assert got.status_code == 200 and got.content == data
    ticket = url.rsplit("/", 1)[1].encode()
    assert all(ticket not in body for body in receiver.bodies)

    by_id = {span.span_id.hex(): span for _, span in receiver.spans()}

    def under(span: Any) -> list[Any]:
        """Every span below `span`."""
        found, todo = [], [span.span_id]
        while todo:
            parent = todo.pop()
            children = [s for s in by_id.values() if s.parent_span_id == parent]
            found += children
            todo += [c.span_id for c in children]
        return found

    (register,) = [s for s in by_id.values() if s.name == "mutation Register"]
    assert by_id[register.parent_span_id.hex()].kind == SERVER_KIND
    assert {"insert"} <= {s.name.rsplit(".", 1)[1] for s in under(register) if s.name.startswith("t_")}
    assert "store head" in {s.name for s in under(register)}

    (stream,) = [s for s in by_id.values() if s.name == "download stream"]
    server = by_id[stream.parent_span_id.hex()]
    assert server.kind == SERVER_KIND and _attributes(server)["url.path"] == "/downloads/<redacted>"
    assert _attributes(stream) == {
        "modelhub.download.bytes_requested": len(data),
        "modelhub.download.bytes_sent": len(data),
        "modelhub.download.outcome": "COMPLETED",
    }
    (read,) = [s for s in under(stream) if s.name == "store read"]
    assert read.parent_span_id == stream.span_id
    assert _attributes(read) == {
        "modelhub.store.kind": "local",
        "modelhub.store.bucket": "bucket-t",
        "modelhub.store.bytes_read": len(data),
    }
    assert [s for s in under(stream) if s.name.startswith("t_")]  # the event's COMPLETED write
