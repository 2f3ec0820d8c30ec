"""The app factory: health and readiness, routes, and no connection before the lifespan starts."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from secantus import SecantusDBServer

from graphql_api.app import MissingDatabase, create_app
from tests.servers import free_port, make_settings


async def test_healthz_and_readyz(http: httpx.AsyncClient) -> None:
    """/healthz answers while the process lives; /readyz says both dependencies are reachable."""
    assert (await http.get("/healthz")).json() == {"status": "ok"}
    ready = await http.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready", "mongo": "ok", "store": "ok"}


# slow: waits out ~3s of real timeouts (`make check` leaves it to `make test`)
@pytest.mark.slow
async def test_readyz_is_503_without_the_object_store(mongo_uri: str, tmp_path: Path) -> None:
    """With the S3 endpoint unreachable, /readyz answers 503 and names the store."""
    settings = make_settings("s3", mongo_uri, f"http://127.0.0.1:{free_port()}", tmp_path)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            resp = await http.get("/readyz")
    assert resp.status_code == 503
    assert resp.json()["mongo"] == "ok" and resp.json()["store"].startswith("unavailable")


# slow: waits out ~7s of real timeouts (`make check` leaves it to `make test`)
@pytest.mark.slow
async def test_readyz_is_503_without_mongo(tmp_path: Path) -> None:
    """When MongoDB goes away under a running app, /readyz answers 503 while /healthz still answers."""
    server = SecantusDBServer(storage_path=str(tmp_path / "db"), port=0)
    server.start()
    app = create_app(make_settings("local", str(server.uri), None, tmp_path / "data"))
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=30) as http:
                assert (await http.get("/readyz")).status_code == 200
                server.stop()
                resp = await http.get("/readyz")
                assert resp.status_code == 503 and resp.json()["mongo"].startswith("unavailable")
                assert (await http.get("/healthz")).status_code == 200
    finally:
        server.stop()


def test_create_app_connects_to_nothing(tmp_path: Path) -> None:
    """Building the app opens no connection (an unreachable URI is fine); no URI at all is a clear error."""
    create_app(make_settings("local", f"mongodb://127.0.0.1:{free_port()}", None, tmp_path))
    with pytest.raises(MissingDatabase, match="MODELHUB_MONGO_URI"):
        create_app(make_settings("local", "", None, tmp_path))


async def test_healthz_fails_when_the_embedded_database_could_not_be_restarted(
    mongo_uri: str, tmp_path: Path
) -> None:
    """/healthz is 200 while the supervisor's state is `up` and 503 once it says `failed`."""
    state = tmp_path / "db.state"
    state.write_text("up")
    app = create_app(make_settings("local", mongo_uri, None, tmp_path / "data", embedded_state_file=state))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as http,
    ):
        assert (await http.get("/healthz")).status_code == 200
        state.write_text("failed")
        resp = await http.get("/healthz")
    assert resp.status_code == 503 and resp.json()["status"] == "failed"
