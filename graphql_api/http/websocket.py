"""GraphQL over a WebSocket (graphql-transport-ws) under the rules of an HTTP request: every operation is
authenticated again, checked against the persisted-operation registry and runs with a context of its own
(so the request guards price and rate-limit it like an HTTP request), and a socket whose token dies is
closed, even while only a subscription runs on it. Every other message (ping, pong, connection_init, complete,
anything unknown) costs a point of the cost budget too, and a message the protocol cannot read closes the
socket with 4400, as graphql-transport-ws asks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, Mapping
from typing import Any

from graphql import GraphQLError
from starlette.websockets import WebSocketDisconnect, WebSocketState
from strawberry.asgi import ASGIWebSocketAdapter
from strawberry.http.exceptions import (
    NonJsonMessageReceived,
    NonTextMessageReceived,
    WebSocketDisconnected,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
    _OperationStreamClosed,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    CompleteMessage,
    ConnectionInitMessage,
    ErrorMessage,
    Message,
    SubscribeMessage,
)
from strawberry.utils.aio import aclosing

from ..auth import bearer
from ..documents import utcnow
from ..errors import OUTAGE_MESSAGES, DomainError
from ..limits import Pace, RateLimited
from ..schema.context import Context
from ..schema.guards import MIN_COST, address_key, budget_key
from ..validation import lone_surrogate
from .admission import admission_of

log = logging.getLogger("modelhub")

# graphql-transport-ws leaves 4400-4499 to the server; 4401 is what its own reference server sends for an
# unauthenticated socket, so clients know it: reconnect with a new token, not with the same one.
CLOSE_UNAUTHENTICATED = 4401
# Strawberry closes with 4429 for a second connection_init ("Too many initialisation requests"); a socket
# whose sender's cost budget is spent is closed with the same code (HTTP's 429), its reason saying when to
# retry ("too many requests; retry in N s", RATE_LIMITED's message on HTTP).
CLOSE_RATE_LIMITED = 4429
# One socket's messages are handled at most this many a second on average, after a burst of MESSAGE_BURST: a
# faster sender waits (its messages queue in uvicorn, then in TCP), so one socket cannot burn the CPU faster
# than the cost budget bounds in total (a principal's 100,000 points went in 8 s of 4 sockets' pings,
# stalling other clients for seconds). Keep-alive pings and a page's subscriptions are far below it.
MESSAGES_PER_SECOND = 50.0
MESSAGE_BURST = 100.0
# graphql-transport-ws's code for a message it cannot read (Strawberry's, with its wording).
CLOSE_BAD_MESSAGE = 4400
UNREADABLE = "Failed to parse message"
# What a subscribe's payload may hold: each field's allowed types, with HTTP's wording when it is not one.
PAYLOAD_FIELDS: dict[str, tuple[type, str]] = {
    "query": (str, "a string or null"),
    "variables": (dict, "an object or null"),
    "operationName": (str, "a string or null"),
    "extensions": (dict, "an object or null"),
}
# The shortest pause between two checks of a socket's token (a tiny MODELHUB_TOKEN_CACHE_SECONDS must not
# turn every socket into a busy loop).
MIN_CHECK_SECONDS = 0.1


class MessageAdapter(ASGIWebSocketAdapter):
    """Strawberry's ASGI socket, reading each message as plain JSON: the view's decode_json answers an HTTP
    body (its refusals are HTTP errors, which escaped the socket handler as tracebacks), while a socket
    message that is not JSON, or nests too deep for the parser, is graphql-transport-ws's 4400."""

    async def iter_json(self, *, ignore_parsing_errors: bool = False) -> AsyncGenerator[object, None]:
        try:
            while self.ws.application_state != WebSocketState.DISCONNECTED:
                text = await self.ws.receive_text()
                try:
                    message = json.loads(text)
                except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
                    if ignore_parsing_errors:
                        continue
                    raise NonJsonMessageReceived from exc
                if lone_surrogate(text, message):  # not text UTF-8 can hold: as unreadable as bad JSON
                    raise NonJsonMessageReceived
                yield message
        except KeyError as exc:  # a binary frame: Starlette's message has no "text"
            raise NonTextMessageReceived from exc
        except WebSocketDisconnect:
            pass

    async def send_json(self, message: Mapping[str, object]) -> None:
        """As Strawberry's, and a send after the socket was closed (its peer gone, or our own 4429 racing an
        answer) is the disconnect it is, not a RuntimeError escaping as a traceback per operation."""
        try:
            await super().send_json(message)
        except RuntimeError as exc:
            if self.ws.application_state != WebSocketState.DISCONNECTED:
                raise
            raise WebSocketDisconnected from exc

    async def close(self, code: int, reason: str) -> None:
        """Closes the socket; closing one already closed does nothing."""
        if self.ws.application_state != WebSocketState.DISCONNECTED:
            with contextlib.suppress(RuntimeError):  # closed meanwhile by the peer's going
                await super().close(code, reason)


def malformed(message: dict[str, Any]) -> str | None:
    """Why graphql-transport-ws cannot read `message` (the close reason), or None: an id that is not a
    string, a subscribe payload that is not an object or whose fields have the wrong types (HTTP's
    wording), an unknown type (named in at most 40 ASCII characters: a close reason holds 123 bytes)."""
    if "type" not in message:
        return UNREADABLE
    kind = message["type"]
    if kind not in ("connection_init", "ping", "pong", "subscribe", "complete"):
        return f"Unknown message type: {ascii(kind)[:40]}"
    if kind in ("subscribe", "complete") and not isinstance(message.get("id"), str):
        return UNREADABLE
    if kind != "subscribe":
        return None
    payload = message.get("payload")
    if not isinstance(payload, dict):
        return "The subscribe message's `payload` must be an object"
    for name, (kind_of, words) in PAYLOAD_FIELDS.items():
        value = payload.get(name)
        if value is not None and not isinstance(value, kind_of):
            return f"The GraphQL operation's `{name}` must be {words}, if provided."
    return None


class GuardedTransportWS(BaseGraphQLTransportWSHandler[Context, None]):
    """Strawberry's graphql-transport-ws handler with the checks an HTTP request passes."""

    watchdog: asyncio.Task[None] | None = None
    pace: Pace | None = None
    holder: str | None = None  # whose count of open sockets this one is in (see handle_connection_init)

    async def handle_task_exception(self, error: Exception) -> None:
        if isinstance(error, WebSocketDisconnected):  # the peer left while an operation was answering
            log.debug("websocket: the peer left during an operation")
            return
        await super().handle_task_exception(error)

    async def handle_message(self, message: Message) -> None:
        """Every message not priced as an operation costs its sender a point, from the bucket an HTTP request
        would be charged: the client address's (anonymous) until the socket is acknowledged, then its
        principal's (or the address's, with no principal). A `connection_init` is charged once it is
        answered, to whom it identified. When the bucket is spent the socket is closed (4429, the reason
        saying when to retry); a message the protocol cannot read closes it with 4400. Past
        MESSAGES_PER_SECOND, each message waits its turn first."""
        if self.pace is None:
            self.pace = Pace(MESSAGES_PER_SECOND, MESSAGE_BURST)
        delay = self.pace.wait()
        if delay > 0:
            await asyncio.sleep(delay)
        raw: object = message
        if not isinstance(raw, dict):
            if await self._paid():
                await self.websocket.close(code=CLOSE_BAD_MESSAGE, reason=UNREADABLE)
            return
        kind = raw.get("type")
        if kind == "connection_init":
            await super().handle_message(message)
            key, anonymous = self._payer()
            self.context.services.budget.charge(key, anonymous, MIN_COST, MIN_COST)
            return
        if not (kind == "subscribe" and self.connection_acknowledged) and not await self._paid():
            return
        reason = malformed(raw)
        if reason is not None:
            await self.websocket.close(code=CLOSE_BAD_MESSAGE, reason=reason)
            return
        await super().handle_message(message)

    def _payer(self) -> tuple[str, bool]:
        """Whose bucket the socket's messages are paid from (see handle_message)."""
        return budget_key(self.context) if self.connection_acknowledged else address_key(self.context)

    async def _paid(self) -> bool:
        """Takes a point for one message; False, the socket closed with 4429, when none is left."""
        key, anonymous = self._payer()
        try:
            self.context.services.budget.bucket(anonymous).take(key, MIN_COST)
        except RateLimited as exc:
            await self.websocket.close(code=CLOSE_RATE_LIMITED, reason=exc.message)
            return False
        return True

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        await super().handle_connection_init(message)
        if not self.connection_acknowledged or self.holder is not None:
            return
        key, _ = budget_key(self.context)
        sockets = self.context.services.sockets
        if not sockets.open(key):
            reason = f"{sockets.per_caller} open sockets already (MODELHUB_MAX_SOCKETS_PER_PRINCIPAL)"
            await self.websocket.close(code=CLOSE_RATE_LIMITED, reason=reason)
            return
        self.holder = key
        if admission := admission_of(self.context.request.scope):
            admission.acknowledge()  # no longer closed to make room at the connection cap
        if self.connection_acknowledged and self.watchdog is None and self._has_token():
            self.watchdog = asyncio.create_task(self._watch())

    async def shutdown(self) -> None:
        if self.holder is not None:
            self.context.services.sockets.close(self.holder)
            self.holder = None
        if self.watchdog is not None:
            self.watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.watchdog
        await super().shutdown()

    def _has_token(self) -> bool:
        try:
            return bearer(self.context.credentials or {}) is not None
        except DomainError:
            return False

    def _pause(self) -> float:
        """Until the next check: half the token cache's period (the cache is shared, so all the sockets of
        one token cost one lookup a period), or until the token expires if that is sooner."""
        pause = self.context.services.settings.token_cache_seconds / 2
        identity = self.context.identity
        if identity is not None and identity.expires_at is not None:
            pause = min(pause, (identity.expires_at - utcnow()).total_seconds() + 0.01)
        return max(pause, MIN_CHECK_SECONDS)

    async def _watch(self) -> None:
        """Re-checks the socket's token periodically; closes the socket with 4401 once it is revoked or
        expired. A check the database cannot answer keeps the socket until the next one."""
        failing = False
        while True:
            await asyncio.sleep(self._pause())
            try:
                if not await self._still_authenticated():
                    return
                failing = False
            except Exception as exc:  # an outage: operations fail on their own; the socket is kept
                if not failing:  # once per outage and socket, not at every check
                    log.warning("re-checking a WebSocket's token failed (%s)", type(exc).__name__)
                failing = True

    async def _still_authenticated(self) -> bool:
        """Authenticates the socket's credentials again (through the token cache); closes it when they no
        longer identify anyone."""
        await self.context.authenticate(self.context.credentials or {})
        if self.context.identity is not None:
            return True
        reason = self.context.identity_error.message if self.context.identity_error else "unauthenticated"
        await self.websocket.close(code=CLOSE_UNAUTHENTICATED, reason=reason[:120])
        return False

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        """Before an operation starts: the caller is authenticated again (a dead token closes the socket)
        and the operation's text is resolved by the persisted-operation registry, as on HTTP (a hash alone
        runs the registered text; `enforce` refuses an unregistered one with a typed error)."""
        if not self.connection_acknowledged or message.get("id") in self.operations:
            await super().handle_subscribe(message)  # Strawberry closes the socket (4401, 4409)
            return
        payload: Any = message.get("payload")
        try:
            if not await self._still_authenticated():
                return
            if isinstance(payload, dict):
                registry = self.context.services.persisted
                payload["query"] = await registry.resolve_request(
                    payload.get("query"), payload.get("extensions")
                )
        except DomainError as exc:
            await self._refuse(message, exc.message, exc.code)
            return
        except Exception as exc:  # the database could not answer the token or registry lookup
            log.warning("an operation on a WebSocket could not be checked (%s)", type(exc).__name__)
            await self._refuse(message, OUTAGE_MESSAGES["DATABASE_UNAVAILABLE"], "DATABASE_UNAVAILABLE")
            return
        await super().handle_subscribe(message)

    async def _refuse(self, message: SubscribeMessage, text: str, code: str) -> None:
        error = GraphQLError(text, extensions={"code": code})
        await self.send_message(ErrorMessage(id=message["id"], type="error", payload=[error.formatted]))

    async def run_operation(self, operation: Operation[Context, None]) -> None:
        """Strawberry's, but each operation runs with a context of its own (see Context.for_operation)."""
        try:
            result_source = await self.schema.stream(
                operation.query,
                variable_values=operation.variables,
                context_value=self.context.for_operation(),
                root_value=self.root_value,
                operation_name=operation.operation_name,
            )
            async with aclosing(result_source):
                await self._send_result_stream(operation, result_source)
            await operation.send_operation_message(CompleteMessage(id=operation.id, type="complete"))
        except _OperationStreamClosed:
            return
        except Exception as error:
            await self.handle_task_exception(error)
            with contextlib.suppress(Exception):
                await operation.send_operation_message({"id": operation.id, "type": "complete"})
            self.operations.pop(operation.id, None)
            raise
