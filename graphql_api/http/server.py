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
HEADERS_TOO_LARGE = _raw_response(
    "431 Request Header Fields Too Large", "HEADERS_TOO_LARGE",
    "the request line and headers are larger than this server accepts",
)  # fmt: skip

# How long a connection refused 431 is kept (reading nothing) so that its client reads the answer.
_LINGER_SECONDS = 2.0

# The order in which connections began to wait for a request (loop.time() ties within one batch of accepts).
ORDER = itertools.count(1)


class Waits:
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
    waiting = [c for c in connections if isinstance(c, Waits) and c._waiting()]
    if not waiting:
        return False
    oldest = min(waiting, key=lambda c: c._waiting_since)
    oldest._make_room()
    connections.discard(oldest)  # it is closing: its room is free now
    return True


if TYPE_CHECKING:
    _Base = H11Protocol
else:
    _Base = object


class Guarded(Waits, _Base):
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
        self.transport.write(HEADERS_TOO_LARGE)
        self.transport.pause_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(_LINGER_SECONDS, self.transport.close)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        cycle = self.cycle
        self._in_request = cycle is not None and not cycle.response_complete  # a pipelined one started
        if not self._in_request:
            self._waiting_since = next(ORDER)  # idle in keep-alive: the first to make room

    def handle_websocket_upgrade(self, *args: Any) -> None:
        # The socket now belongs to the WebSocket protocol (GuardedWebSocketProtocol: evictable until the
        # app accepts its `connection_init`; uvicorn's pings bound an unresponsive peer).
        self._in_request = True
        self._disarm()
        super().handle_websocket_upgrade(*args)

    def _arm(self) -> None:
        if self._limits is not None and self._header_timer is None:
            self._waiting_since = next(ORDER)
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
