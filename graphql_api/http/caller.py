"""Who is calling and where links point, read once from a Starlette connection for GraphQL and the routes."""

from __future__ import annotations

from starlette.requests import HTTPConnection

from .. import client_kind, logs
from ..auth import Principal, require_principal
from ..downloads import Requester
from ..scope import Scope
from ..services import Services


def services_of(conn: HTTPConnection) -> Services:
    services: Services = conn.app.state.services
    return services


async def caller_of(conn: HTTPConnection) -> tuple[Principal | None, Scope]:
    """The caller (None: anonymous in token mode) with its effective grants, and what it may read; raises
    Unauthenticated for a bad token or identity."""
    services = services_of(conn)
    found, scope = await services.projects.resolve(await services.auth.authenticate(conn.headers))
    if found is not None:
        logs.principal.set(found.engineer)
    return found, scope


def client_address(conn: HTTPConnection) -> str | None:
    """The peer's address; uvicorn replaces it from X-Forwarded-For only for MODELHUB_TRUSTED_PROXIES."""
    return conn.client.host if conn.client else None


def requester(conn: HTTPConnection, principal: Principal | None) -> Requester:
    """The caller as recorded on a download event; Unauthenticated without a principal."""
    who = require_principal(principal)
    agent = conn.headers.get("user-agent")
    kind, rule = client_kind.decide(who.client_kind, conn.headers, agent)
    return Requester(
        who.engineer,
        agent,
        client_address(conn),
        who.token_id,
        client_kind=kind,
        client_kind_rule=rule,
        client_version=client_kind.client_version(agent),
    )


_HTTP_SCHEME = {"ws": "http", "wss": "https"}


def base_url(conn: HTTPConnection) -> str:
    """Where links to this server point: the configured public URL, else the request's own base (an
    operation sent over a WebSocket gets the http(s) URL of the same host: tickets are fetched by HTTP)."""
    public = services_of(conn).settings.public_url
    if public:
        return public.rstrip("/")
    url = conn.base_url
    return str(url.replace(scheme=_HTTP_SCHEME.get(url.scheme, url.scheme))).rstrip("/")
