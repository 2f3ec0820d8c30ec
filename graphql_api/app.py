"""The Starlette application factory: lifespan (DB, Beanie, object store), routes and GraphQL."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pymongo
from cross_web import HTTPException
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import mark_process_dead
from pymongo import AsyncMongoClient
from starlette.applications import Starlette
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route, WebSocketRoute
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLRequestData
from strawberry.http.ides import get_graphql_ide_html
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types.unset import UNSET, UnsetType

from . import checksums, downloads, oidc, operations, uploads
from .analytics import feed
from .analytics.roller import Roller
from .analytics.volume import EventVolume
from .audit import AuditLog
from .auth import Authenticator, bootstrap_admin
from .client import DOCUMENTS as client_documents
from .config import Settings
from .db import audit as audit_db
from .db import connect
from .db import events as events_db
from .db import work as db_work
from .db.events import EventWrites
from .delivery import Deliverer
from .documents import AuditEvent, AuditKind
from .errors import DomainError
from .health import Health, Watch, pause
from .http import assets, ui
from .http import routes as routes_
from .http.assets import GraphiQLPage
from .http.caller import client_address
from .http.errors import error_response, graphql_error_response
from .http.middleware import (
    BodyLimit,
    FixedRouteMetrics,
    OutageGuard,
    RequestContext,
    install_log_redaction,
)
from .http.websocket import GuardedTransportWS
from .limits import CostBudget, RateLimiter, ScanSlots, scan_total
from .metrics import Metrics, exposition, multiprocess_dir, reap_dead_workers
from .model_cache import ModelCache
from .operations import sha256_of
from .schema import SchemaLimits, build_schema
from .schema import operations as schema_operations
from .schema.context import Context
from .scope import ProjectDirectory
from .services import Services
from .signing import Signer
from .storage import ObjectStore
from .storage.guarded import GuardedStore
from .storage.local import LocalObjectStore
from .storage.s3 import S3ObjectStore
from .storage.traced import TracedStore
from .tracing import Tracing

log = logging.getLogger("modelhub")
# The discovery document and the JWKS are small; a provider slower than this fails the sign-in at hand.
OIDC_FETCH_TIMEOUT = 5.0


class MissingDatabase(RuntimeError):
    pass


class ModelhubGraphQL(GraphQL[Context, None]):
    graphql_transport_ws_handler_class = GuardedTransportWS
    ide_page: GraphiQLPage | None = None
    persisted: operations.Registry | None = None  # set by the lifespan

    async def parse_http_body(self, request: Any) -> GraphQLRequestData | list[GraphQLRequestData]:
        """As Strawberry's, then each operation's text resolved by the persisted-operation registry: a hash
        alone (`extensions.persistedQuery.sha256Hash`, Apollo's shape) runs the registered text, and the
        mode decides whether an unregistered text may run."""
        data = await super().parse_http_body(request)
        if self.persisted is None:
            return data
        for item in data if isinstance(data, list) else [data]:
            try:
                item.query = await self.persisted.resolve_request(item.query, item.extensions)
            except operations.MalformedPersistedQuery as exc:
                raise HTTPException(400, exc.message) from exc
        return data

    @property
    def graphql_ide_html(self) -> str:
        """GraphiQL with its assets served by this app when they are installed (see http/assets.py)."""
        return self.ide_page.html if self.ide_page is not None else super().graphql_ide_html

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """As Strawberry's, but a request it refuses before GraphQL starts (bad JSON, wrong shape) gets a
        GraphQL-shaped JSON error with a code, not a plain-text body."""
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        await until_disconnected(lambda body: self._respond(scope, body, send), receive)

    async def _respond(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            response = await self.run(Request(scope, receive))
        except HTTPException as exc:
            response = graphql_error_response(exc.status_code, "BAD_REQUEST", exc.reason)
        except (
            DomainError
        ) as exc:  # a persisted-operation refusal: a GraphQL error, as Apollo's clients expect
            response = graphql_error_response(200, exc.code, exc.message)
        await response(scope, receive, send)

    def decode_json(self, data: str | bytes) -> object:
        """JSON bodies: UTF-8, an object (or a batch list of objects) at the top; nesting too deep for the
        parser (RecursionError) is a 400 like any other unparseable body."""
        try:
            value = json.loads(data)
        except (UnicodeDecodeError, RecursionError, ValueError) as exc:
            raise HTTPException(400, "Unable to parse request body as JSON (UTF-8)") from exc
        if not isinstance(value, dict | list) or (
            isinstance(value, list) and not all(isinstance(item, dict) for item in value)
        ):
            raise HTTPException(400, "the request body must be a JSON object with a `query`")
        return value

    async def get_context(self, request: Any, response: Any) -> Context:
        services: Services = request.app.state.services
        context = Context(request=request, response=response, services=services)
        await context.authenticate(request.headers)
        return context

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        """WebSocket clients authenticate in `connection_init` ({"Authorization": "Bearer …"}), since
        browsers cannot set headers on a WebSocket; a caller that cannot be identified is refused."""
        params = {str(k).lower(): str(v) for k, v in (context.connection_params or {}).items()}
        headers = {**{k.lower(): v for k, v in context.request.headers.items()}, **params}
        context.credentials = headers  # re-checked before each operation and while the socket lives
        await context.authenticate(headers)
        if context.identity is None:
            code = context.identity_error.code if context.identity_error else "UNAUTHENTICATED"
            context.services.audit.record(
                AuditEvent(
                    kind=AuditKind.REFUSED,
                    action="connection_init",
                    outcome=code,
                    client_address=client_address(context.request),
                    transport="websocket",
                )
            )
            raise ConnectionRejectionError({"reason": "authenticate in connection_init"})
        accepted: UnsetType = UNSET
        return accepted


async def until_disconnected(respond: Callable[[Any], Awaitable[None]], receive: Any) -> None:
    """Runs `respond` (which reads the whole body through the wrapped `receive`), and cancels it when the
    client disconnects before the response is done: an abandoned request's database work stops (its raw scan
    between pieces, its running piece killed by RequestGuards) instead of running on for nobody."""
    body_read = asyncio.Event()
    left = asyncio.Event()

    async def receive_body() -> Any:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            body_read.set()
        return message

    task = asyncio.ensure_future(respond(receive_body))

    async def watch() -> None:
        await body_read.wait()
        while (await receive())["type"] != "http.disconnect":
            pass
        if not task.done():
            left.set()
            task.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        if left.is_set():
            return  # the client left: nobody is waiting for the response
        task.cancel()  # the server is cancelling us
        raise
    finally:
        watcher.cancel()


def _watches(settings: Settings, client: Any, store: ObjectStore) -> Health:
    async def ping_database() -> None:
        # Bounded by the driver itself (it closes the connection cleanly), inside the watch's own bound.
        with pymongo.timeout(settings.health_probe_timeout_seconds * 0.9):
            await client.admin.command("ping")

    def watch(name: str, probe: Any) -> Watch:
        return Watch(
            name,
            probe,
            interval=settings.health_interval_seconds,
            timeout=settings.health_probe_timeout_seconds,
            failures=settings.health_failures,
        )

    return Health(watch("the database", ping_database), watch("the object store", store.ping))


async def _open_store(settings: Settings, signer: Signer, stack: AsyncExitStack) -> ObjectStore:
    if settings.storage_backend == "s3":
        return await S3ObjectStore.open(settings, stack)
    return LocalObjectStore(settings.objects_dir, signer, settings.stream_chunk_bytes)


async def open_store(settings: Settings, stack: AsyncExitStack) -> ObjectStore:
    """The configured object store, for a command that works on it outside the app (`modelhub prune`)."""
    return await _open_store(settings, Signer(settings.resolved_signing_secret()), stack)


async def _sweep_until(stopped: asyncio.Event, services: Services, stale_seconds: float) -> None:
    """Sweeps stale IN_PROGRESS downloads and abandoned uploads at start-up, then every half staleness
    period, until stopped."""
    while not stopped.is_set():
        try:
            await downloads.sweep_stale(services, stale_seconds)
            await uploads.expire_abandoned(services)
        except Exception:  # a failed sweep is retried next period; it must not kill the app
            log.exception("sweeping stale downloads and uploads failed")
        await pause(stopped, max(stale_seconds / 2, 1.0))


async def _verify_until(stopped: asyncio.Event, store: ObjectStore, seconds: float, concurrency: int) -> None:
    """Hashes the artifacts of PENDING versions (registered where the store holds no full SHA-256)."""
    while not stopped.is_set():
        try:
            await checksums.verify_pending(store, concurrency=concurrency)
        except Exception:  # retried next period; it must not kill the app
            log.exception("verifying artifact checksums failed")
        await pause(stopped, seconds)


async def _stop(task: asyncio.Task[Any], ask: Callable[[], None] | None = None) -> None:
    """Stops a background task before the clients it uses close: asked to (`ask`) and given 5 s, else
    cancelled and given 5 s more; shutdown never hangs on a stuck task."""
    if ask is not None:
        ask()
        if (await asyncio.wait({task}, timeout=5))[0]:
            return
    task.cancel()
    if not (await asyncio.wait({task}, timeout=5))[0]:
        log.error("a background task did not stop within 5 s of being cancelled")


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no such route, a method it does not serve) as JSON errors like the rest."""
    assert isinstance(exc, StarletteHTTPException)
    codes = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}
    response = error_response(exc.status_code, codes.get(exc.status_code, "BAD_REQUEST"), str(exc.detail))
    response.headers.update(exc.headers or {})
    return response


def create_app(settings: Settings) -> Starlette:
    """A fresh app; nothing connects until its lifespan starts."""
    if not settings.mongo_uri:
        raise MissingDatabase(
            "no MongoDB URI: set MODELHUB_MONGO_URI, or run `modelhub serve` for the embedded DB"
        )
    mongo_uri = settings.mongo_uri
    auth_mode = settings.auth or "token"
    grants = oidc.group_grants(settings) if auth_mode == "oidc" else None
    install_log_redaction()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            bounds: dict[str, Any] = {
                "serverSelectionTimeoutMS": int(settings.mongo_server_selection_timeout_seconds * 1000),
                "connectTimeoutMS": int(settings.mongo_connect_timeout_seconds * 1000),
            }
            # The health probe's own client (one connection, no listeners): a pool taken by requests cannot
            # starve it, so the database is marked down when it stops answering, not when it is busy.
            probe_client: AsyncMongoClient[Any] = AsyncMongoClient(mongo_uri, maxPoolSize=1, **bounds)
            stack.push_async_callback(probe_client.close)
            # Traces when OTEL_* says so (the otel extra); exported and stopped after everything else.
            app.state.tracing = tracing = Tracing.from_env()
            if tracing is not None:
                stack.push_async_callback(asyncio.to_thread, tracing.shutdown)
                stack.callback(setattr, app.state, "tracing", None)
                bounds["event_listeners"] = [tracing.mongo_listener()]
            bounds["maxPoolSize"] = settings.mongo_max_pool_size
            await stack.enter_async_context(connect(mongo_uri, settings.mongo_db, **bounds))
            stack.push_async_callback(db_work.drain, 5.0)  # raw-scan pieces still on the database
            signer = Signer(settings.resolved_signing_secret())
            raw_store = await _open_store(settings, signer, stack)
            health = _watches(settings, probe_client, raw_store)
            store: ObjectStore = GuardedStore(raw_store, health.store, settings.store_timeout_seconds)
            if tracing is not None:
                store = TracedStore(store, tracing)
            app.state.health = health
            for watch in health.all():
                stack.push_async_callback(_stop, asyncio.create_task(watch.run()), watch.stop)
            metrics = Metrics(
                operation_allowlist=settings.metrics_operation_allowlist,
                model_allowlist=settings.metrics_model_allowlist,
            )
            auth = Authenticator(auth_mode, settings.token_cache_seconds, settings.token_touch_seconds)
            stack.push_async_callback(auth.drain, 5.0)  # lastUsedAt writes still pending
            if grants is not None:
                http = await stack.enter_async_context(httpx.AsyncClient(timeout=OIDC_FETCH_TIMEOUT))
                auth.oidc = oidc.verifier(settings, grants, http)
            registry = operations.Registry(metrics, operations.PersistedMode(settings.persisted_operations))
            await registry.load()
            for _, body in shipped:
                registry.ship(body)
            graphql_app.persisted = registry
            stack.callback(setattr, graphql_app, "persisted", None)
            model_cache = ModelCache(metrics, settings.model_cache_entries, settings.model_cache_seconds)
            stack.push_async_callback(_stop, asyncio.create_task(model_cache.run()))
            feed_hub = feed.Hub(
                settings.feed_buffer_events,
                feed.FeedLimits(
                    per_principal=settings.feed_max_subscriptions_per_principal,
                    per_instance=settings.feed_max_subscriptions,
                    catching_up=settings.feed_max_catching_up,
                ),
                metrics,
            )
            stack.push_async_callback(feed_hub.close)
            # Retention: TTL indexes made (or their expiry changed) to match the settings.
            await events_db.ensure_retention(settings.event_retention_days)
            await audit_db.ensure_retention(settings.audit_retention_days)
            audit_log = AuditLog(metrics, settings.audit_queue_records, settings.audit_retention_days)
            stack.push_async_callback(audit_log.close, asyncio.create_task(audit_log.run()))
            app.state.services = Services(
                settings=settings,
                store=store,
                signer=signer,
                metrics=metrics,
                auth=auth,
                scope=settings.storage_scope,
                limiter=RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst),
                budget=CostBudget(
                    settings.cost_budget, settings.anonymous_cost_budget, settings.cost_budget_window_seconds
                ),
                scans=ScanSlots(
                    settings.raw_scans_per_principal,
                    scan_total(settings.raw_scans_total, settings.mongo_max_pool_size),
                    settings.raw_scan_piece_seconds,
                ),
                persisted=registry,
                models=model_cache,
                feed=feed_hub,
                projects=ProjectDirectory(settings.token_cache_seconds, header_mode=auth_mode == "header"),
                audit=audit_log,
                volume=EventVolume(),
                events=EventWrites(lambda write, size: metrics.event_write_batch.labels(write).observe(size)),
            )
            await app.state.services.volume.refresh()  # raw scans are priced by their events from the start
            if auth_mode != "header" and (token := await bootstrap_admin()):
                # Printed once, on the first start with no token at all; only its hash is kept.
                log.warning("created the first ADMIN token (shown once, keep it): %s", token)
            sweep_stopped = asyncio.Event()
            volume = app.state.services.volume.run(sweep_stopped)
            stack.push_async_callback(_stop, asyncio.create_task(volume), sweep_stopped.set)
            sweeper = _sweep_until(sweep_stopped, app.state.services, settings.stale_download_seconds)
            stack.push_async_callback(_stop, asyncio.create_task(sweeper), sweep_stopped.set)
            verify_stopped = asyncio.Event()
            verifier = _verify_until(
                verify_stopped, store, settings.checksum_interval_seconds, settings.checksum_concurrency
            )
            stack.push_async_callback(_stop, asyncio.create_task(verifier), verify_stopped.set)
            roll_stopped = asyncio.Event()
            roller = Roller(
                metrics,
                settings.rollup_interval_seconds,
                settings.rollup_lag_seconds,
                settings.rollup_lease_seconds,
            )
            stack.push_async_callback(_stop, asyncio.create_task(roller.run(roll_stopped)), roll_stopped.set)
            deliver_stopped = asyncio.Event()
            deliverer = Deliverer(settings, metrics)
            await deliverer.prepare()
            stack.push_async_callback(
                _stop, asyncio.create_task(deliverer.run(deliver_stopped)), deliver_stopped.set
            )
            multiproc = multiprocess_dir()
            if multiproc:
                reap_dead_workers(multiproc)  # a worker that crashed left its live gauges behind
                stack.callback(mark_process_dead, os.getpid(), multiproc)
            yield

    async def metrics_endpoint(request: Request) -> Response:
        if settings.metrics_token is not None and not _bearer_matches(
            request.headers.get("authorization", ""), settings.metrics_token.get_secret_value()
        ):
            response = error_response(401, "UNAUTHENTICATED", "/metrics needs its bearer token")
            response.headers["www-authenticate"] = 'Bearer realm="metrics"'
            return response
        services: Services = request.app.state.services
        return Response(exposition(services.metrics), media_type=CONTENT_TYPE_LATEST)

    async def index(request: Request) -> Response:
        return RedirectResponse("/graphql")

    limits = SchemaLimits(
        max_tokens=settings.max_query_tokens,
        max_fields=settings.max_expanded_fields,
        introspection=settings.introspection,
    )
    schema = build_schema(limits)
    graphql_app = ModelhubGraphQL(
        schema,
        graphql_ide="graphiql" if settings.graphiql else None,
        # Only graphql-transport-ws, whose handler applies the rules of an HTTP request (http/websocket.py);
        # the legacy graphql-ws protocol would bypass them.
        subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
    )
    ui_operations = schema_operations.split(ui.operations_text())
    shipped = schema_operations.shipped(ui_operations, client_documents)
    sign_in = None
    if grants is not None and settings.oidc_client_id and settings.oidc_audience:
        sign_in = ui.SignIn(settings.oidc_client_id, settings.oidc_scopes, settings.oidc_audience)
    ui_page = ui.UiPage({name: sha256_of(body) for name, body in ui_operations if name}, auth_mode, sign_in)
    ide_routes = []
    if settings.graphiql:
        cdn_html = assets.with_default_document(get_graphql_ide_html(graphql_ide="graphiql"))
        page = GraphiQLPage.build(cdn_html, settings.assets_dir or assets.default_dir())
        graphql_app.ide_page = page
        ide_routes.append(Route(assets.PREFIX + "{path:path}", page.serve))
    routes = [
        *ide_routes,
        Route("/", index),
        Route("/healthz", routes_.healthz),
        Route("/readyz", routes_.readyz),
        Route("/graphql", graphql_app, methods=["GET", "POST"]),
        WebSocketRoute("/graphql", graphql_app),
        Route("/downloads/{ticket}", routes_.download_by_ticket),
        Route("/models/{name:path}/download", routes_.download_model),
        Route("/objects/{token}", routes_.local_presigned_object),
        Route("/uploads/{token}", routes_.upload_object, methods=["PUT"]),
        Route("/metrics", metrics_endpoint),
        Route("/ui", ui_page.index),
        Route("/ui/{name}", ui_page.file),
    ]
    middleware = [
        Middleware(RequestContext),
        *_hosts(settings),
        *_cors(settings),
        _prometheus_middleware(),
        Middleware(BodyLimit, max_bytes=settings.max_body_bytes),
        Middleware(OutageGuard),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=middleware,
        exception_handlers={StarletteHTTPException: _http_error},
    )
    app.state.settings = settings
    return app


def _bearer_matches(header: str, token: str) -> bool:
    """Whether an Authorization header carries exactly `token` as a bearer token (constant-time compare)."""
    scheme, _, value = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())


# Headers a browser client may send: JSON bodies, bearer tokens, the engineer header, resumable downloads.
CORS_REQUEST_HEADERS = [
    "content-type",
    "authorization",
    "x-engineer-id",
    "range",
    "if-range",
    "if-none-match",
]
# Headers a browser client may read from a download response.
CORS_EXPOSED_HEADERS = ["content-disposition", "content-length", "content-range", "etag", "x-download-id"]


def _cors(settings: Settings) -> list[Middleware]:
    """Starlette's CORS middleware for the configured origins; none (no CORS headers at all) by default."""
    if not settings.cors_origins:
        return []
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "HEAD", "OPTIONS"],
            allow_headers=CORS_REQUEST_HEADERS,
            expose_headers=CORS_EXPOSED_HEADERS,
            max_age=settings.cors_max_age_seconds,
        )
    ]


def _hosts(settings: Settings) -> list[Middleware]:
    """Unknown Host headers are refused (400) when allowed hosts are configured."""
    if not settings.allowed_hosts:
        return []
    return [Middleware(TrustedHostMiddleware, allowed_hosts=settings.allowed_hosts)]


def _prometheus_middleware() -> Middleware:
    return Middleware(
        FixedRouteMetrics,
        app_name="modelhub",
        prefix="modelhub_http",
        group_paths=True,
        filter_unhandled_paths=True,
        skip_paths=["/metrics", "/healthz", "/readyz"],
    )


def create_app_from_env() -> Starlette:
    """The uvicorn factory for `--workers N`: each worker reads its settings from the environment."""
    return create_app(Settings())
