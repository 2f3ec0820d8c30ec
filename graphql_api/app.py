"""The Starlette application factory: lifespan (DB, Beanie, object store), routes and GraphQL."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

from beanie import init_beanie
from pymongo import AsyncMongoClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from strawberry.asgi import GraphQL

from .config import Settings
from .documents import ALL_DOCUMENTS
from .schema import build_schema
from .schema.context import Context
from .services import Services
from .signing import Signer
from .storage import ObjectStore
from .storage.local import LocalObjectStore
from .storage.s3 import S3ObjectStore

log = logging.getLogger("modelhub")


class MissingDatabase(RuntimeError):
    pass


class ModelhubGraphQL(GraphQL[Context, None]):
    async def get_context(self, request: Any, response: Any) -> Context:
        services: Services = request.app.state.services
        return Context(request=request, response=response, services=services)


async def _open_store(settings: Settings, signer: Signer, stack: AsyncExitStack) -> ObjectStore:
    if settings.storage_backend == "s3":
        return await S3ObjectStore.open(settings, stack)
    return LocalObjectStore(settings.objects_dir, signer, settings.stream_chunk_bytes)


def create_app(settings: Settings) -> Starlette:
    """A fresh app; nothing connects until its lifespan starts."""
    if not settings.mongo_uri:
        raise MissingDatabase(
            "no MongoDB URI: set MODELHUB_MONGO_URI, or run `modelhub serve` for the embedded DB"
        )
    mongo_uri = settings.mongo_uri

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            client: AsyncMongoClient[Any] = AsyncMongoClient(
                mongo_uri, tz_aware=True, serverSelectionTimeoutMS=10_000
            )
            stack.push_async_callback(client.close)
            db = client[settings.mongo_db]
            await init_beanie(database=db, document_models=ALL_DOCUMENTS)
            signer = Signer(settings.resolved_signing_secret())
            store = await _open_store(settings, signer, stack)
            app.state.mongo = client
            app.state.services = Services(settings=settings, store=store, signer=signer)
            yield

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        checks: dict[str, str] = {}
        try:
            await asyncio.wait_for(request.app.state.mongo.admin.command("ping"), 3)
            checks["mongo"] = "ok"
        except Exception as exc:  # readiness reports any failure; it never raises
            checks["mongo"] = f"unavailable: {type(exc).__name__}"
        try:
            await asyncio.wait_for(request.app.state.services.store.ping(), 3)
            checks["store"] = "ok"
        except Exception as exc:
            checks["store"] = f"unavailable: {type(exc).__name__}"
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse({"status": "ready" if ready else "unavailable", **checks}, 200 if ready else 503)

    async def index(request: Request) -> Response:
        return RedirectResponse("/graphql")

    graphql_app = ModelhubGraphQL(build_schema(), graphql_ide="graphiql")
    routes = [
        Route("/", index),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/graphql", graphql_app, methods=["GET", "POST"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.settings = settings
    return app


def create_app_from_env() -> Starlette:
    """The uvicorn factory for `--workers N`: each worker reads its settings from the environment."""
    return create_app(Settings())
