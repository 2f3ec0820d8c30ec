"""The HTTP middleware: /graphql's fast metrics path records the series starlette-exporter records."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client import REGISTRY
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from graphql_api.http.middleware import FixedRouteMetrics

LABELS = ("method", "path", "status_code", "app_name")


def series(name: str, app_name: str) -> dict[tuple[str, ...], float]:
    found: dict[tuple[str, ...], float] = {}
    for family in REGISTRY.collect():
        for sample in family.samples:
            if sample.name == name and sample.labels.get("app_name") == app_name:
                found[tuple(sample.labels[k] for k in LABELS)] = sample.value
    return found


async def answer(request: Request) -> Response:
    if request.query_params.get("fail"):
        raise RuntimeError("boom")
    return PlainTextResponse("ok", status_code=int(request.query_params.get("status", "200")))


@pytest.mark.parametrize("fast", [True, False])
async def test_fixed_route_series_match_the_library(fast: bool) -> None:
    """Requests to a fixed route give the same series (labels, counts, durations, in-progress back at 0)
    whether they take the fast path or starlette-exporter's own."""
    app_name = f"t{fast}"
    routes = [Route("/graphql", answer, methods=["GET", "POST"]), Route("/items/{id}", answer)]
    app = Starlette(routes=routes)
    app.add_middleware(
        FixedRouteMetrics,
        fixed_paths=("/graphql",) if fast else (),
        app_name=app_name,
        prefix="fixedtest",
        group_paths=True,
        filter_unhandled_paths=True,
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        await http.post("/graphql")
        await http.post("/graphql")
        await http.get("/graphql?status=400")
        await http.get("/items/7")
        with pytest.raises(RuntimeError):
            await http.post("/graphql?fail=1")
    assert series("fixedtest_requests_total", app_name) == {
        ("POST", "/graphql", "200", app_name): 2.0,
        ("GET", "/graphql", "400", app_name): 1.0,
        ("GET", "/items/{id}", "200", app_name): 1.0,
        ("POST", "/graphql", "500", app_name): 1.0,
    }
    durations = series("fixedtest_request_duration_seconds_count", app_name)
    assert durations[("POST", "/graphql", "200", app_name)] == 2.0
    in_progress = {
        sample.labels["method"]: sample.value
        for family in REGISTRY.collect()
        for sample in family.samples
        if sample.name == "fixedtest_requests_in_progress" and sample.labels.get("app_name") == app_name
    }
    assert in_progress and set(in_progress.values()) == {0.0}
