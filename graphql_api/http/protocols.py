"""The protocols `modelhub serve` gives uvicorn: its HTTP ones (httptools, h11) and its WebSocket one, each
with the limits of `server.py` (`Guarded`) and what is particular to it: how a head over the caps is found
and refused, and, for WebSockets, admission (`admission.py`) and the bounded close (`ws_protocol.py`)."""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT, FlowControl
from uvicorn.protocols.http.h11_impl import H11Protocol
from websockets.exceptions import InvalidState
from websockets.http11 import Request as WebSocketRequest

from .admission import ADMISSION_EXTENSION, CLOSE_INIT_TIMEOUT, WebSocketAdmission
from .server import HEADERS_TOO_LARGE, ORDER, ConnectionLimits, Guarded, Receive, Scope, Send, Waits
from .ws_protocol import BoundedCloseProtocol

# Pipelining (httptools): a read is parsed in slices of at most this many bytes (growing from the first while
# the slices hold no new request, as a body does), and parsing stops, and reading, once this many requests
# wait behind the one being answered; what remains of the read is kept unparsed until they drain.
_FIRST_SLICE = 1024
_LAST_SLICE = 16384
_PIPELINE_DEPTH = 2


class _HeldFlow(FlowControl):
    """uvicorn's flow control with one more reason not to read: a pipelined backlog kept unparsed. Reading
    resumes only when neither uvicorn (its own pauses) nor the backlog holds it."""

    held = False

    def pause_reading(self) -> None:
        self._set(True, self.held)

    def resume_reading(self) -> None:
        self._set(False, self.held)

    def hold(self) -> None:
        self._set(self.read_paused, True)

    def release(self) -> None:
        self._set(self.read_paused, False)

    def _set(self, read_paused: bool, held: bool) -> None:
        """The transport reads while neither reason holds it: told only when that changes."""
        was, now = self.read_paused or self.held, read_paused or held
        self.read_paused, self.held = read_paused, held
        if now and not was:
            self._transport.pause_reading()
        elif was and not now:
            self._transport.resume_reading()


class GuardedH11Protocol(Guarded, H11Protocol):
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
    body = HEADERS_TOO_LARGE.partition(b"\r\n\r\n")[2]
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"cache-control", b"no-store"), (b"connection", b"close")]  # fmt: skip
    await send({"type": "http.response.start", "status": 431, "headers": headers})
    await send({"type": "http.response.body", "body": body})


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - httptools comes with uvicorn[standard]
    GuardedProtocol: type[asyncio.Protocol] = GuardedH11Protocol
else:

    class GuardedHttpToolsProtocol(Guarded, HttpToolsProtocol):  # type: ignore[misc]
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


class GuardedWebSocketProtocol(Waits, BoundedCloseProtocol):
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
        self._waiting_since = next(ORDER)

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
