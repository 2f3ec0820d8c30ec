"""CORS: configured browser origins may call the API; others get no CORS headers; preflights are answered."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from graphql_api.app import create_app
from tests.servers import make_settings

ALLOWED = "http://localhost:5173"


@pytest.fixture
async def cors_http(mongo_uri: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings("local", mongo_uri, None, tmp_path / "data", cors_origins=[ALLOWED])
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield client


async def test_allowed_origin_gets_the_allow_header(cors_http: httpx.AsyncClient) -> None:
    """A POST to /graphql from an allowed origin is answered with that origin in Access-Control-Allow-Origin."""
    resp = await cors_http.post("/graphql", json={"query": "{ __typename }"}, headers={"origin": ALLOWED})
    assert resp.status_code == 200
    assert resp.headers["access-control-allow-origin"] == ALLOWED


async def test_refused_origin_gets_no_allow_header(cors_http: httpx.AsyncClient) -> None:
    """Another origin gets no Access-Control-Allow-Origin (the browser then withholds the response)."""
    resp = await cors_http.post(
        "/graphql", json={"query": "{ __typename }"}, headers={"origin": "http://evil.example"}
    )
    assert "access-control-allow-origin" not in resp.headers
    preflight = await cors_http.options(
        "/graphql",
        headers={"origin": "http://evil.example", "access-control-request-method": "POST"},
    )
    assert preflight.status_code == 400 and "access-control-allow-origin" not in preflight.headers


@pytest.mark.parametrize("path", ["/graphql", "/downloads/some-ticket", "/models/m/download"])
async def test_preflight_allows_the_client_headers(cors_http: httpx.AsyncClient, path: str) -> None:
    """A preflight for /graphql and the download routes allows content-type, authorization and x-engineer-id."""
    resp = await cors_http.options(
        path,
        headers={
            "origin": ALLOWED,
            "access-control-request-method": "POST" if path == "/graphql" else "GET",
            "access-control-request-headers": "content-type, authorization, x-engineer-id",
        },
    )
    assert resp.status_code == 200
    assert resp.headers["access-control-allow-origin"] == ALLOWED
    allowed = {h.strip() for h in resp.headers["access-control-allow-headers"].lower().split(",")}
    assert {"content-type", "authorization", "x-engineer-id"} <= allowed
    assert int(resp.headers["access-control-max-age"]) > 0


async def test_no_cors_by_default(http: httpx.AsyncClient) -> None:
    """With no origins configured the app sends no CORS headers at all, and a preflight is not answered."""
    resp = await http.post("/graphql", json={"query": "{ __typename }"}, headers={"origin": ALLOWED})
    assert "access-control-allow-origin" not in resp.headers
    preflight = await http.options(
        "/graphql", headers={"origin": ALLOWED, "access-control-request-method": "POST"}
    )
    assert "access-control-allow-origin" not in preflight.headers
