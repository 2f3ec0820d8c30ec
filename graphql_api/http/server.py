"""How connections are held: a header read timeout, a body read timeout (the gap between chunks), an idle
keep-alive limit and a cap on open connections, on top of uvicorn's own HTTP protocol.

uvicorn (0.54) has none of the first two: its keep-alive timer starts only once a response is complete and
is cancelled by the first byte of the next request, so a connection that sends nothing, or a header a byte
at a time, or a body that stalls, is held for ever; and its `limit_concurrency` is checked only once a
request's headers have arrived, so slow connections pile up uncounted.

Here a connection whose request headers are not complete within `header_seconds` of its first byte (or of
being opened) gets 408 and is closed; a request body that sends nothing for `body_seconds` gets 408 (its
handler sees the client gone) and the connection is closed; a connection past the cap closes the one that
has waited longest for a request's headers (408), or, when every connection is in a request, is answered
503 and closed as it is accepted.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from uvicorn.protocols.http.h11_impl import H11Protocol

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class ConnectionLimits:
    """The limits of one server process (picklable: uvicorn hands its config to worker processes)."""

    header_seconds: float
    body_seconds: float
    keep_alive_seconds: int
    max_connections: int


def _raw_response(status: str, code: str, message: str, extra: str = "") -> bytes:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        f"cache-control: no-store\r\n{extra}connection: close\r\n\r\n"
    )
    return head.encode() + body


_REFUSED = _raw_response(
    "503 Service Unavailable", "TOO_MANY_CONNECTIONS", "this server holds as many connections as it may; "
    "try again shortly", "retry-after: 1\r\n",
)  # fmt: skip
_HEADERS_TIMED_OUT = _raw_response(
    "408 Request Timeout", "REQUEST_TIMEOUT", "the request's headers did not arrive in time"
)
_BODY_TIMED_OUT = json.dumps(
    {"error": {"code": "REQUEST_TIMEOUT", "message": "the request body stopped arriving"}}
).encode()


# The order in which connections began to wait for a request (loop.time() ties within one batch of accepts).
_ORDER = itertools.count(1)

if TYPE_CHECKING:
    _Base = H11Protocol
else:
    _Base = object


class _Guarded(_Base):
    """The limits, mixed into either of uvicorn's HTTP protocols (they share the attributes used here).
    Without `connection_limits` on the uvicorn config it behaves exactly like the protocol it extends."""

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any], _loop: Any = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._limits: ConnectionLimits | None = getattr(config, "connection_limits", None)
        self._refused = False
        self._header_timer: asyncio.TimerHandle | None = None
        self._in_request = False
        self._seen_cycle: Any = None
        self._waiting_since = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        limits = self._limits
        full = limits is not None and len(self.server_state.connections) >= limits.max_connections
        if full and not self._evict_a_waiting_one():
            # Refused before it costs anything: never registered, so never counted or timed.
            self._refused = True
            transport.write(_REFUSED)
            transport.close()
            return
        super().connection_made(transport)
        self._arm()

    def _evict_a_waiting_one(self) -> bool:
        """At the cap, the connection that has waited longest for a request's headers (idle, or sending
        them slowly) makes room: a flood of slow connections then displaces itself, and a client that
        sends its request at once still gets in. False when every connection is in a request."""
        waiting = [c for c in self.server_state.connections if isinstance(c, _Guarded) and c._waiting()]
        if not waiting:
            return False
        oldest = min(waiting, key=lambda c: c._waiting_since)
        oldest._headers_too_slow()
        self.server_state.connections.discard(oldest)  # it is closing: its room is free now
        return True

    def _waiting(self) -> bool:
        return not self._in_request and not self._refused and not self.transport.is_closing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            return
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if not self._in_request:
            self._arm()  # the first byte of a request (the keep-alive timer stops here): headers are timed
        super().data_received(data)
        cycle = self.cycle
        if cycle is not None and cycle is not self._seen_cycle:  # a request's headers are complete
            self._seen_cycle = cycle
            self._in_request = True
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        cycle = self.cycle
        self._in_request = cycle is not None and not cycle.response_complete  # a pipelined one started
        if not self._in_request:
            self._waiting_since = next(_ORDER)  # idle in keep-alive: the first to make room

    def handle_websocket_upgrade(self, *args: Any) -> None:
        # The socket now belongs to the WebSocket protocol (its pings bound an idle peer).
        self._in_request = True
        self._disarm()
        super().handle_websocket_upgrade(*args)

    def _arm(self) -> None:
        if self._limits is not None and self._header_timer is None:
            self._waiting_since = next(_ORDER)
            self._header_timer = self.loop.call_later(self._limits.header_seconds, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self._in_request or self.transport.is_closing():
            return
        self.transport.write(_HEADERS_TIMED_OUT)  # between requests: no response is being written
        self.transport.close()


class GuardedH11Protocol(_Guarded, H11Protocol):
    pass


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - httptools comes with uvicorn[standard]
    GuardedProtocol: type[asyncio.Protocol] = GuardedH11Protocol
else:

    class GuardedHttpToolsProtocol(_Guarded, HttpToolsProtocol):  # type: ignore[misc]
        pass

    # What to give uvicorn (`Config(http=GuardedProtocol)`): its own "auto" choice, guarded.
    GuardedProtocol = GuardedHttpToolsProtocol


class BodyReadTimeout:
    """An ASGI wrapper that bounds the wait for each chunk of a request body (not the whole body: a large
    upload may stream for hours as long as it keeps coming). On a stall the client is answered 408 with
    `connection: close` (uvicorn then closes the connection) and the handler sees `http.disconnect`, as if
    the client had gone; what the handler tries to answer then is dropped."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_done = timed_out = started = False

        async def guarded_receive() -> Message:
            nonlocal body_done, timed_out, started
            if timed_out:
                return {"type": "http.disconnect"}
            if body_done:  # only a disconnect can come now: a response may wait for it as long as it streams
                return await receive()
            try:
                async with asyncio.timeout(self.seconds):
                    message = await receive()
            except TimeoutError:
                timed_out = True
                if not started:
                    started = True
                    headers = [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(_BODY_TIMED_OUT)).encode()),
                        (b"cache-control", b"no-store"),
                        (b"connection", b"close"),
                    ]
                    await send({"type": "http.response.start", "status": 408, "headers": headers})
                    await send({"type": "http.response.body", "body": _BODY_TIMED_OUT})
                return {"type": "http.disconnect"}
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if timed_out:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except Exception:
            if not timed_out:
                raise
            # The handler failed because its client was declared gone: expected, already answered.
