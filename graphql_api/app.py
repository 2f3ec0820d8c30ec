"""The Starlette application factory: the GraphQL endpoint, the routes table, middleware and the lifespan
(lifespan.py)."""

from __future__ import annotations

import hmac
from datetime import timedelta
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from strawberry.http.ides import get_graphql_ide_html
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL

from . import oidc
from .client import DOCUMENTS as client_documents
from .config import Settings
from .http import assets, ui
from .http import routes as routes_
from .http.assets import GraphiQLPage
from .http.errors import error_response
from .http.graphql_view import ModelhubGraphQL
from .http.middleware import (
    BodyLimit,
    FixedRouteMetrics,
    OutageGuard,
    RequestContext,
    install_log_redaction,
)
from .lifespan import Lifespan
from .metrics import exposition
from .operations import sha256_of
from .schema import SchemaLimits, build_schema
from .schema import operations as schema_operations
from .services import Services


class MissingDatabase(RuntimeError):
    pass


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
    auth_mode = settings.auth or "token"
    grants = oidc.group_grants(settings) if auth_mode == "oidc" else None
    install_log_redaction()
    graphql_app = _graphql_app(settings)
    ui_operations = schema_operations.split(ui.operations_text())
    shipped = schema_operations.shipped(ui_operations, client_documents)
    sign_in = None
    if grants is not None and settings.oidc_client_id and settings.oidc_audience:
        sign_in = ui.SignIn(settings.oidc_client_id, settings.oidc_scopes, settings.oidc_audience)
    ui_page = ui.UiPage({name: sha256_of(body) for name, body in ui_operations if name}, auth_mode, sign_in)
    lifespan = Lifespan(settings, grants, graphql_app, shipped)
    app = Starlette(
        routes=_routes(settings, graphql_app, ui_page),
        lifespan=lifespan,
        middleware=_middleware(settings),
        exception_handlers={StarletteHTTPException: _http_error},
    )
    app.state.settings = settings
    # The lifespan's two halves, for tests that share one app across a test module (tests/conftest.py):
    # `connection` once, then `serving` anew for each test, so no cache, limit, metric or queue of one test
    # is seen by the next.
    app.state.connection = lifespan.connection
    app.state.serving = lifespan.serving
    return app


def _graphql_app(settings: Settings) -> ModelhubGraphQL:
    """The GraphQL endpoint over the schema built under the settings' limits."""
    limits = SchemaLimits(
        max_tokens=settings.max_query_tokens,
        max_fields=settings.max_expanded_fields,
        introspection=settings.introspection,
    )
    schema = build_schema(limits)
    return ModelhubGraphQL(
        schema,
        graphql_ide="graphiql" if settings.graphiql else None,
        # Only graphql-transport-ws, whose handler applies the rules of an HTTP request (http/websocket.py);
        # the legacy graphql-ws protocol would bypass them.
        subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
        # A socket must send `connection_init` as soon as a request must send its headers (else 4408).
        connection_init_wait_timeout=timedelta(seconds=settings.header_timeout_seconds),
    )


def _routes(settings: Settings, graphql_app: ModelhubGraphQL, ui_page: ui.UiPage) -> list[BaseRoute]:
    """The routes table (GraphiQL's local assets first, when it is on)."""
    ide_routes = []
    if settings.graphiql:
        cdn_html = assets.with_default_document(get_graphql_ide_html(graphql_ide="graphiql"))
        page = GraphiQLPage.build(cdn_html, settings.assets_dir or assets.default_dir())
        graphql_app.ide_page = page
        ide_routes.append(Route(assets.PREFIX + "{path:path}", page.serve))
    return [
        *ide_routes,
        Route("/", _index),
        Route("/healthz", routes_.healthz),
        Route("/readyz", routes_.readyz),
        Route("/graphql", graphql_app, methods=["GET", "POST"]),
        WebSocketRoute("/graphql", graphql_app),
        Route("/downloads/{ticket}", routes_.download_by_ticket),
        Route("/models/{name:path}/download", routes_.download_model),
        Route("/objects/{token}", routes_.local_presigned_object),
        Route("/uploads/{token}", routes_.upload_object, methods=["PUT"]),
        Route("/metrics", _metrics_endpoint(settings)),
        Route("/ui", ui_page.index),
        Route("/ui/{name}", ui_page.file),
    ]


def _middleware(settings: Settings) -> list[Middleware]:
    return [
        Middleware(RequestContext),
        *_hosts(settings),
        *_cors(settings),
        _prometheus_middleware(),
        Middleware(BodyLimit, max_bytes=settings.max_body_bytes),
        Middleware(OutageGuard),
    ]


def _metrics_endpoint(settings: Settings) -> Any:
    async def metrics_endpoint(request: Request) -> Response:
        if settings.metrics_token is not None and not _bearer_matches(
            request.headers.get("authorization", ""), settings.metrics_token.get_secret_value()
        ):
            response = error_response(401, "UNAUTHENTICATED", "/metrics needs its bearer token")
            response.headers["www-authenticate"] = 'Bearer realm="metrics"'
            return response
        services: Services = request.app.state.services
        return Response(exposition(services.metrics), media_type=CONTENT_TYPE_LATEST)

    return metrics_endpoint


async def _index(request: Request) -> Response:
    return RedirectResponse("/graphql")


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
