"""How connections are held: a header read timeout, a cap on a request's head (request line and headers), an
idle keep-alive limit and a cap on open connections, on top of uvicorn's own HTTP and WebSocket protocols
(with the body read timeout, the gap between chunks, in `body_timeout.py`).

uvicorn (0.54) has none of the first two: its keep-alive timer starts only once a response is complete and
is cancelled by the first byte of the next request, so a connection that sends nothing, or a header a byte
at a time, or a body that stalls, is held for ever; and its `limit_concurrency` is checked only once a
request's headers have arrived, so slow connections pile up uncounted. Nor does it bound a request's head:
httptools grows a header by concatenation, so its cost is quadratic in the header's length (a 100 MB header
blocked the event loop for about 10 s of CPU, every other client with it, and was then answered 200).

Here a connection whose request headers are not complete within `header_seconds` of its first byte (or of
being opened) gets 408 and is closed; a head that has taken more than `max_header_bytes` and is still not
complete gets 431 and the connection is closed (checked after each read is parsed, so the work done on one
head is bounded by the cap plus one read of at most 256 KiB: the same 100 MB header is now refused after its
first few megabytes reach the server, for about 0.04 s of CPU, and another client's requests meanwhile took
at most 26 ms instead of 5 s), and so does a complete head over the cap (httptools); a request body that
sends nothing for `body_seconds` gets 408 (its handler sees the client gone) and the connection is closed; a
connection past the cap closes the one that has waited longest for a request's headers (408) or for its
WebSocket's `connection_init` to be accepted (close 4408), or, when every connection is in a request or an
accepted WebSocket, is answered 503 and closed as it is accepted. A head of more than `max_header_count` lines
is refused 431 too, and (httptools) a connection's pipelined requests are parsed only while at most two wait
behind the one being answered (see GuardedHttpToolsProtocol).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import h11
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT, FlowControl
from uvicorn.protocols.http.h11_impl import H11Protocol
from websockets.exceptions import InvalidState
from websockets.http11 import Request as WebSocketRequest

from .admission import ADMISSION_EXTENSION, CLOSE_INIT_TIMEOUT, WebSocketAdmission
from .ws_protocol import BoundedCloseProtocol

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
    max_header_bytes: int
    max_header_count: int = 100


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
_HEADERS_TOO_LARGE = _raw_response(
    "431 Request Header Fields Too Large", "HEADERS_TOO_LARGE",
    "the request line and headers are larger than this server accepts",
)  # fmt: skip

# Pipelining (httptools): a read is parsed in slices of at most this many bytes (growing from the first while
# the slices hold no new request, as a body does), and parsing stops, and reading, once this many requests
# wait behind the one being answered; what remains of the read is kept unparsed until they drain.
_FIRST_SLICE = 1024
_LAST_SLICE = 16384
_PIPELINE_DEPTH = 2


# How long a connection refused 431 is kept (reading nothing) so that its client reads the answer.
_LINGER_SECONDS = 2.0

# The order in which connections began to wait for a request (loop.time() ties within one batch of accepts).
_ORDER = itertools.count(1)


class _Waits:
    """A connection that may wait for its client (for a request's headers, or a WebSocket's
    `connection_init`): at the cap, the one that has waited longest is closed to make room."""

    _waiting_since = 0

    def _waiting(self) -> bool:
        raise NotImplementedError

    def _make_room(self) -> None:
        raise NotImplementedError


def _evict_a_waiting_one(connections: set[Any]) -> bool:
    """At the cap, the connection that has waited longest for its client (headers not yet complete, idle in
    keep-alive, or a WebSocket whose `connection_init` has not been accepted) makes room: a flood of slow or
    silent connections then displaces itself, and a client that sends its request at once still gets in.
    False when every connection is in a request (or an accepted WebSocket)."""
    waiting = [c for c in connections if isinstance(c, _Waits) and c._waiting()]
    if not waiting:
        return False
    oldest = min(waiting, key=lambda c: c._waiting_since)
    oldest._make_room()
    connections.discard(oldest)  # it is closing: its room is free now
    return True


class _HeldFlow(FlowControl):
    """uvicorn's flow control with one more reason not to read: a pipelined backlog kept unparsed. Reading
    resumes only when neither uvicorn (its own pauses) nor the backlog holds it."""

    held = False

    def pause_reading(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            if not self.held:
                self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            if not self.held:
                self._transport.resume_reading()

    def hold(self) -> None:
        if not self.held:
            self.held = True
            if not self.read_paused:
                self._transport.pause_reading()

    def release(self) -> None:
        if self.held:
            self.held = False
            if not self.read_paused:
                self._transport.resume_reading()


if TYPE_CHECKING:
    _Base = H11Protocol
else:
    _Base = object


class _Guarded(_Waits, _Base):
    """The limits, mixed into either of uvicorn's HTTP protocols (they share the attributes used here).
    Without `connection_limits` on the uvicorn config it behaves exactly like the protocol it extends.

    A request's head is measured while it is incomplete (`_head_open`, kept by the protocol's parser
    callbacks: httptools' here; h11 bounds its own buffer, see GuardedH11Protocol)."""

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any], _loop: Any = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._limits: ConnectionLimits | None = getattr(config, "connection_limits", None)
        self._refused = False
        self._header_timer: asyncio.TimerHandle | None = None
        self._in_request = False
        self._seen_cycle: Any = None
        self._waiting_since = 0
        self._head_open = False  # a request's head has begun and is not complete
        self._head_began = False  # ... and it began within the read being parsed
        self._head_bytes = 0
        self._body_bytes = 0
        self._answered = False  # refused (431) and closing: nothing more is read

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        limits = self._limits
        full = limits is not None and len(self.server_state.connections) >= limits.max_connections
        if full and not _evict_a_waiting_one(self.server_state.connections):
            # Refused before it costs anything: never registered, so never counted or timed.
            self._refused = True
            transport.write(_REFUSED)
            transport.close()
            return
        super().connection_made(transport)
        self._arm()

    def _waiting(self) -> bool:
        return not self._in_request and not self._refused and not self.transport.is_closing()

    def _make_room(self) -> None:
        if self._answered:
            self.transport.close()
        else:
            self._headers_too_slow()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            return
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused or self._answered:
            return
        if not self._in_request:
            self._arm()  # the first byte of a request (the keep-alive timer stops here): headers are timed
        self._head_began = False
        self._body_bytes = 0  # of request bodies parsed in this read
        super().data_received(data)
        cycle = self.cycle
        if cycle is not None and cycle is not self._seen_cycle:  # a request's headers are complete
            self._seen_cycle = cycle
            self._in_request = True
            self._disarm()
        if self._head_open and self._limits is not None:
            self._count_head(data)

    def _count_head(self, data: bytes) -> None:
        """After a read is parsed, with a head still incomplete: its bytes in this read are added to the
        head's size, and a head over the cap is refused (431). Counting after parsing lets a read that
        completes a head and carries a large body pass. A head begun within the read (pipelining) is
        charged an upper bound of its part: the read less the bodies parsed in it, and at most what follows
        the read's last end of a head."""
        assert self._limits is not None
        size = len(data)
        if self._head_began:
            end = data.rfind(b"\r\n\r\n")
            size = min(size - self._body_bytes, size - (end + 4 if end >= 0 else 0))
        self._head_bytes += size
        if self._head_bytes > self._limits.max_header_bytes and not self.transport.is_closing():
            self._headers_too_large()

    def _headers_too_large(self) -> None:
        self._head_open = False
        self._disarm()
        if self._in_request:  # a pipelined request's head while another's response is under way
            self.transport.close()  # closed without an answer: the response in progress cannot be cut
            return
        # The client may still be sending its head: closing with its bytes unread would reset the connection
        # and could lose the answer. So nothing more is read or parsed, writing ends after the answer, and
        # the connection is closed a little later (or at once if it must make room).
        self._answered = True
        self.transport.write(_HEADERS_TOO_LARGE)
        self.transport.pause_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(_LINGER_SECONDS, self.transport.close)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        cycle = self.cycle
        self._in_request = cycle is not None and not cycle.response_complete  # a pipelined one started
        if not self._in_request:
            self._waiting_since = next(_ORDER)  # idle in keep-alive: the first to make room

    def handle_websocket_upgrade(self, *args: Any) -> None:
        # The socket now belongs to the WebSocket protocol (GuardedWebSocketProtocol: evictable until the
        # app accepts its `connection_init`; uvicorn's pings bound an unresponsive peer).
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
    """h11 parses a head in linear time and bounds it itself (`max_incomplete_event_size`, 16 KiB by
    default): here that bound is the cap, and a head over it is answered 431 as under httptools. h11 checks
    only a head still incomplete after a read, so a head over the cap that arrives whole in one read (at
    most 256 KiB) passes; h11 reads nothing more while a request is being answered."""

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any], _loop: Any = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        if self._limits is not None:
            limits = self._limits
            self.conn = _CountingConnection(limits.max_header_count, limits.max_header_bytes)

    def send_400_response(self, msg: str) -> None:
        limits = self._limits
        too_many = isinstance(self.conn, _CountingConnection) and self.conn.too_many_headers
        if limits is not None and (too_many or len(self.conn.trailing_data[0]) > limits.max_header_bytes):
            self._headers_too_large()  # h11's "receive buffer too long", or too many header lines
            return
        super().send_400_response(msg)

    def shutdown(self) -> None:
        if self._answered:  # refused 431 and lingering (h11 may be mid-request): nothing more to say
            self.transport.close()
            return
        super().shutdown()


class _CountingConnection(h11.Connection):
    """h11's server connection, refusing a request of more than `max_headers` header lines (uvicorn answers
    h11's protocol errors 400: GuardedH11Protocol answers this one 431)."""

    too_many_headers = False

    def __init__(self, max_headers: int, max_head_bytes: int) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=max_head_bytes)
        self._max_headers = max_headers

    def next_event(self) -> Any:
        event = super().next_event()
        if isinstance(event, h11.Request) and len(event.headers) > self._max_headers:
            self.too_many_headers = True
            raise h11.RemoteProtocolError("too many header lines", error_status_hint=431)
        return event


async def _refuse_large_headers(scope: Scope, receive: Receive, send: Send) -> None:
    """The app that answers a request whose complete head is over the cap (its body is not read)."""
    body = _HEADERS_TOO_LARGE.partition(b"\r\n\r\n")[2]
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"cache-control", b"no-store"), (b"connection", b"close")]  # fmt: skip
    await send({"type": "http.response.start", "status": 431, "headers": headers})
    await send({"type": "http.response.body", "body": body})


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - httptools comes with uvicorn[standard]
    GuardedProtocol: type[asyncio.Protocol] = GuardedH11Protocol
else:

    class GuardedHttpToolsProtocol(_Guarded, HttpToolsProtocol):  # type: ignore[misc]
        """httptools' parser callbacks say where a head begins and ends. A head that completes within one
        read is measured from what was parsed (its URL and headers), so a head over the cap is refused
        however it was split into reads; so is a head of more than `max_header_count` lines (431, its
        further headers not kept).

        uvicorn parses all of every read and queues each pipelined request, its headers parsed, while the
        first is answered; and the answering request's `receive()` resumes reading, so a client could have
        the whole of a pipelined flood read and queued (7 MB of heads of 4,000 lines each took 90 MB per
        connection). Here a read is parsed in slices, and once `_PIPELINE_DEPTH` requests wait (or a
        waiting one's body passes uvicorn's high-water mark) the rest of the read is kept unparsed and
        reading stops until the queue drains: a connection's pipeline holds at most those requests plus
        what one slice held."""

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._backlog: bytes | None = None  # unparsed, while the pipeline is full
            self._slice = _FIRST_SLICE
            self._begun = 0  # requests begun (parsed up to their first byte)
            if self._limits is not None and not self._refused:
                self.flow = _HeldFlow(transport)  # before any request's cycle takes it

        def data_received(self, data: bytes) -> None:
            if self._limits is None or self._refused:
                super().data_received(data)
            elif self._backlog is not None:  # held (a read already under way): kept in order
                self._backlog += data
            else:
                self._feed(data)

        def _feed(self, data: bytes) -> None:
            start = 0
            while start < len(data):
                if self._pipeline_full():
                    self._backlog = data[start:]
                    assert isinstance(self.flow, _HeldFlow)
                    self.flow.hold()
                    return
                size, begun = self._slice, self._begun
                super().data_received(data[start : start + size])
                start += size
                if self.transport.is_closing() or self._answered or self.transport.get_protocol() is not self:
                    return  # refused, closed, or upgraded to a WebSocket (uvicorn drops the rest too)
                self._slice = _FIRST_SLICE if self._begun != begun else min(2 * size, _LAST_SLICE)

        def _pipeline_full(self) -> bool:
            waiting = len(self.pipeline)
            return waiting >= _PIPELINE_DEPTH or (waiting > 0 and len(self.cycle.body) > HIGH_WATER_LIMIT)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self._backlog is not None and not self._pipeline_full():
                self.loop.call_soon(self._release)  # not inside the app's `send`

        def _release(self) -> None:
            backlog, self._backlog = self._backlog, None
            if backlog is None or self.transport.is_closing():
                return
            self._feed(backlog)
            if self._backlog is None and isinstance(self.flow, _HeldFlow):
                self.flow.release()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._begun += 1
            self._head_open = self._head_began = True
            self._head_bytes = 0
            self._head_too_large = False
            self._header_count = 0

        _header_count = 0

        def on_header(self, name: bytes, value: bytes) -> None:
            self._header_count += 1
            limits = self._limits
            if limits is not None and self._header_count > limits.max_header_count:
                self._head_too_large = True  # refused once complete; its further headers are not kept
                return
            super().on_header(name, value)

        def on_body(self, body: bytes) -> None:
            self._body_bytes += len(body)
            super().on_body(body)

        def on_headers_complete(self) -> None:
            self._head_open = False
            limits = self._limits
            if limits is None or (
                not self._head_too_large and self._parsed_head_bytes() <= limits.max_header_bytes
            ):
                super().on_headers_complete()
                return
            self._head_too_large = True  # an upgrade is refused in handle_websocket_upgrade
            app, self.app = self.app, _refuse_large_headers
            try:
                super().on_headers_complete()
            finally:
                self.app = app

        def _parsed_head_bytes(self) -> int:
            """The head's size as parsed (method and version aside): its URL, and each header as
            `name: value\\r\\n`."""
            return len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)

        _head_too_large = False

        def handle_websocket_upgrade(self, *args: Any) -> None:
            if self._head_too_large:
                self._headers_too_large()
                return
            super().handle_websocket_upgrade(*args)

    # What to give uvicorn (`Config(http=GuardedProtocol)`): its own "auto" choice, guarded.
    GuardedProtocol = GuardedHttpToolsProtocol


class GuardedWebSocketProtocol(_Waits, BoundedCloseProtocol):
    """uvicorn's WebSocket protocol (its "auto" choice with websockets installed), given the socket at the
    upgrade. Until the app accepts the socket's `connection_init` (WebSocketAdmission in its scope) it
    waits like a connection waiting for its headers, since the upgrade: at the cap the one that has waited
    longest is closed (close 4408; a client may reconnect), so idle unauthenticated sockets cannot keep
    every new connection out."""

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any], _loop: Any = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._limits: ConnectionLimits | None = getattr(config, "connection_limits", None)
        self.admission = WebSocketAdmission()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._waiting_since = next(_ORDER)

    def handle_connect(self, event: WebSocketRequest) -> None:
        super().handle_connect(event)
        if self.response.status_code == 101:  # the app is called (its task has not run yet)
            extensions: dict[str, Any] = self.scope.setdefault("extensions", {})
            extensions[ADMISSION_EXTENSION] = self.admission

    def _waiting(self) -> bool:
        return (
            self._limits is not None
            and not self.admission.acknowledged
            and not self.close_sent
            and not self.transport.is_closing()
        )

    def _make_room(self) -> None:
        if self.handshake_complete:
            try:
                self.conn.send_close(CLOSE_INIT_TIMEOUT, "connection_init did not come in time")
                self.transport.write(b"".join(self.conn.data_to_send()))
            except InvalidState:
                pass
        self.close_sent = True
        self.transport.close()  # the app hears a disconnect (connection_lost)

    def connection_lost(self, exc: Exception | None) -> None:
        # uvicorn removes it from the connections here; one closed to make room was taken out already.
        self.connections.add(self)
        super().connection_lost(exc)
