"""Every GraphQL document the project ships speaks the current schema: the README's examples, the SDK's
operations, the Grafana Infinity panels and the benchmark scripts (no server: validated against the schema
the code builds, literal values included, e.g. a DateTime without an offset fails)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from graphql import GraphQLSchema, parse, validate

from bench import analytics, api, burst, download_throughput, load
from graphql_api import client
from graphql_api.http import ui
from graphql_api.schema import build_schema
from graphql_api.schema.operations import split

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "observability" / "grafana" / "dashboards"


def readme_documents() -> Iterator[tuple[str, str]]:
    text = (ROOT / "README.md").read_text()
    for n, block in enumerate(re.findall(r"```graphql\n(.*?)```", text, re.S)):
        yield f"README graphql block {n + 1}", block
    for n, body in enumerate(re.findall(r"-d '(\{.*?\})'", text, re.S)):
        yield f"README curl body {n + 1}", json.loads(body)["query"]


def dashboard_documents() -> Iterator[tuple[str, str]]:
    iso = datetime(2026, 11, 27, tzinfo=UTC).isoformat().replace("+00:00", "Z")
    for path in sorted(DASHBOARDS.glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                if target.get("type") == "graphql":
                    query = target["url_options"]["body_graphql_query"]
                    query = query.replace("${__from:date:iso}", iso).replace("${__to:date:iso}", iso)
                    yield f"{path.name}: {panel['title']}", query


def code_documents() -> Iterator[tuple[str, str]]:
    yield from [(f"client.{name}", document) for name, document in client.DOCUMENTS.items()]
    # The /ui page's operations, one by one as the server registers them (the SDK's are above).
    yield from [(f"ui {name}", body) for name, body in split(ui.operations_text())]
    yield from [
        ("bench.api.TRIVIAL", api.TRIVIAL),
        ("bench.api.PREFIX_QUERY", api.PREFIX_QUERY),
        ("bench.api.register_body", api.register_body("x")["query"]),
        ("bench.download_throughput.TICKET", download_throughput.TICKET),
        ("bench.download_throughput.REGISTER", download_throughput.REGISTER),
        ("bench.load.REGISTER", load.REGISTER),
        ("bench.analytics.downloads_document", analytics.downloads_document(True)),
        ("bench.burst.REGISTER", burst.REGISTER),
        ("bench.burst.STATS", burst.STATS),
        ("bench.burst.probe_document", burst.probe_document("m")),
    ]
    for n, query in enumerate(load.QUERIES):
        yield f"bench.load.QUERIES[{n}]", query.replace("%(since)s", "2026-11-26T00:00:00Z")
    for title, args, variables, _ in analytics.stats_shapes(datetime.now(UTC)):
        yield f"bench.analytics {title}", analytics.stats_document(args, analytics.declared_for(variables))


DOCUMENTS = [*readme_documents(), *dashboard_documents(), *code_documents()]


@pytest.fixture(scope="module")
def schema() -> GraphQLSchema:
    return build_schema()._schema


def test_every_shipped_document_is_found() -> None:
    """The collectors find the README's examples, the three Grafana GraphQL panels and the code's documents."""
    assert len(list(readme_documents())) >= 2
    assert len(list(dashboard_documents())) == 3
    assert len(list(code_documents())) >= 15


@pytest.mark.parametrize(("where", "document"), DOCUMENTS, ids=[name for name, _ in DOCUMENTS])
def test_document_speaks_the_schema(schema: GraphQLSchema, where: str, document: str) -> None:
    """The document parses and validates against the schema the code builds."""
    errors = validate(schema, parse(document))
    assert not errors, f"{where}: {[e.message for e in errors]}"
