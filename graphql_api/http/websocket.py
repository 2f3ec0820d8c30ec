"""GraphQL over a WebSocket (graphql-transport-ws) under the rules of an HTTP request: every operation is
authenticated again, checked against the persisted-operation registry and runs with a context of its own
(so the request guards price and rate-limit it like an HTTP request), and a socket whose token dies is
closed, even while only a subscription runs on it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from graphql import GraphQLError
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
    _OperationStreamClosed,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    CompleteMessage,
    ConnectionInitMessage,
    ErrorMessage,
    SubscribeMessage,
)
from strawberry.utils.aio import aclosing

from ..auth import bearer
from ..documents import utcnow
from ..errors import OUTAGE_MESSAGES, DomainError
from ..schema.context import Context
from .admission import admission_of

log = logging.getLogger("modelhub")

# graphql-transport-ws leaves 4400-4499 to the server; 4401 is what its own reference server sends for an
# unauthenticated socket, so clients know it: reconnect with a new token, not with the same one.
CLOSE_UNAUTHENTICATED = 4401
# The shortest pause between two checks of a socket's token (a tiny MODELHUB_TOKEN_CACHE_SECONDS must not
# turn every socket into a busy loop).
MIN_CHECK_SECONDS = 0.1


class GuardedTransportWS(BaseGraphQLTransportWSHandler[Context, None]):
    """Strawberry's graphql-transport-ws handler with the checks an HTTP request passes."""

    watchdog: asyncio.Task[None] | None = None

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        await super().handle_connection_init(message)
        if self.connection_acknowledged and (admission := admission_of(self.context.request.scope)):
            admission.acknowledge()  # no longer closed to make room at the connection cap
        if self.connection_acknowledged and self.watchdog is None and self._has_token():
            self.watchdog = asyncio.create_task(self._watch())

    async def shutdown(self) -> None:
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
