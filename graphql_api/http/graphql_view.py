"""The GraphQL endpoint over HTTP: Strawberry's ASGI view with persisted operations, JSON-shaped refusals,
WebSocket authentication in `connection_init`, and requests cancelled when their client leaves."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from cross_web import HTTPException
from starlette.requests import Request
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLRequestData
from strawberry.types.unset import UNSET, UnsetType

from .. import operations
from ..documents import AuditEvent, AuditKind
from ..errors import DomainError
from ..schema.context import Context
from ..services import Services
from ..validation import LONE_SURROGATE, lone_surrogate
from .assets import GraphiQLPage
from .caller import client_address
from .errors import graphql_error_response
from .websocket import GuardedTransportWS, MessageAdapter


class ModelhubGraphQL(GraphQL[Context, None]):
    graphql_transport_ws_handler_class = GuardedTransportWS
    websocket_adapter_class = MessageAdapter  # socket messages are not HTTP bodies: see MessageAdapter
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
        if lone_surrogate(data, value):
            raise HTTPException(400, LONE_SURROGATE)
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
