"""ASGI middleware and log filters at the HTTP edge: request ids, a request body cap, and tokens kept out of
logs."""

from __future__ import annotations

import contextlib
import logging
import re
import time
import uuid
from typing import Any

from starlette_exporter import PrometheusMiddleware

from .. import logs
from ..health import Watch
from ..tracing import Tracing
from .errors import error_response, outage_response
from .streaming import Message, Receive, Scope, Send

_TOKEN_PATH = re.compile(r"/(downloads|objects|uploads)/[^\s/?\"]+")


_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestContext:
    """Gives each HTTP request an id (the caller's `X-Request-ID` when it is a short plain token, else a
    new one), returned in the `x-request-id` response header, and puts it and the `traceparent` trace id
    where the log lines of the request find them."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        rid = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        tracing: Tracing | None = getattr(getattr(scope.get("app"), "state", None), "tracing", None)
        with contextlib.ExitStack() as stack:
            span = None
            if tracing is not None:
                path = _redact(scope["path"])  # a download ticket in a trace is a download anyone could make
                span = stack.enter_context(tracing.server_span(scope["method"], path, headers))
                trace = tracing.trace_id(span)
            else:
                trace = logs.trace_id_of(headers.get(b"traceparent", b"").decode("latin-1"))
            tokens = [(logs.request_id, logs.request_id.set(rid)), (logs.trace_id, logs.trace_id.set(trace))]

            async def with_id(message: Message) -> None:
                if message["type"] == "http.response.start":
                    added = [(b"x-request-id", rid.encode())]
                    if tracing is not None:
                        added += tracing.response_started(span, message["status"])
                    message["headers"] = [*message.get("headers", []), *added]
                await send(message)

            try:
                await self.app(scope, receive, with_id)
            finally:
                for var, token in reversed(tokens):
                    var.reset(token)


class BodyLimit:
    """Refuses (413, JSON) any request body over `max_bytes`, by Content-Length or as it streams in,
    before the app parses a byte of it. Bodies under the cap are read here and handed on whole. Artifact
    uploads (`/uploads/`) stream through: their route checks them against the size they declared. A
    WebSocket message over `max_bytes` closes its socket (1009)."""

    def __init__(self, app: Any, max_bytes: int, streamed: tuple[str, ...] = ("/uploads/",)) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.streamed = streamed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._socket(scope, receive, send)
            return
        if (
            scope["type"] != "http"
            or scope["method"] in ("GET", "HEAD", "OPTIONS")
            or scope["path"].startswith(self.streamed)
        ):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            chunks.append(body)
            more = message.get("more_body", False)
        whole = b"".join(chunks)
        delivered = False

        async def replay() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": whole, "more_body": False}
            return dict(await receive())

        await self.app(scope, replay, send)

    async def _socket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A WebSocket's messages under the same cap: one over it closes the socket with 1009 (message too
        big) and never reaches the app, which sees the socket disconnect (`modelhub serve` also gives uvicorn
        the cap as `ws_max_size`, so such a frame is refused before it is even buffered whole)."""
        closed = False

        async def guarded_receive() -> Message:
            nonlocal closed
            message = await receive()
            if message["type"] == "websocket.receive" and not closed and self._over(message):
                closed = True
                await send({"type": "websocket.close", "code": 1009, "reason": "message too big"})
                return {"type": "websocket.disconnect", "code": 1009}
            return message

        async def guarded_send(message: Message) -> None:
            if not closed:  # once closed here, nothing more goes out
                await send(message)

        await self.app(scope, guarded_receive, guarded_send)

    def _over(self, message: Message) -> bool:
        text = message.get("text")
        if text is not None:
            return len(text) > self.max_bytes or (
                4 * len(text) > self.max_bytes and len(text.encode()) > self.max_bytes
            )
        return len(message.get("bytes") or b"") > self.max_bytes

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"the request body is over the limit of {self.max_bytes} bytes"
        await error_response(413, "PAYLOAD_TOO_LARGE", message)(scope, receive, send)


class OutageGuard:
    """Answers requests that need the database with a typed outage error as soon as its watch says it is
    down: at once when it already is, and mid-request when it goes down before the response has started
    (the watch cancels the request's work). A response already streaming is left alone: a download does
    not need the database to go on. GraphQL gets a GraphQL error (`DATABASE_UNAVAILABLE`), the routes a
    JSON 503."""

    def __init__(
        self,
        app: Any,
        guarded_prefixes: tuple[str, ...] = ("/graphql", "/downloads/", "/models/", "/uploads/"),
    ):
        self.app = app
        self.prefixes = guarded_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        health = getattr(getattr(scope.get("app"), "state", None), "health", None)
        path = scope.get("path", "")
        if scope["type"] != "http" or health is None or not path.startswith(self.prefixes):
            await self.app(scope, receive, send)
            return
        watch: Watch = health.database
        graphql = path.startswith("/graphql")
        if not watch.up:
            await outage_response("DATABASE_UNAVAILABLE", graphql)(scope, receive, send)
            return
        started = False
        with watch.cancelled_when_down() as work:

            async def tracking_send(message: Message) -> None:
                nonlocal started
                if message["type"] == "http.response.start":
                    started = True
                    watch.release(work)  # from here on an outage is the response's own business
                await send(message)

            await self.app(scope, receive, tracking_send)
        if work.cancel_called and not started:  # it went down while the request waited on it
            await outage_response("DATABASE_UNAVAILABLE", graphql)(scope, receive, send)


class FixedRouteMetrics(PrometheusMiddleware):
    """starlette-exporter's middleware, with a fast path for the routes that carry most requests and take
    no parameters (`/graphql`): they skip its per-request `Request`, URL objects and route matching (a
    tenth of a trivial query's CPU) and reuse their label children. The series are the same as the
    library's: method, path, status code, app name; every other request goes through the library."""

    def __init__(self, app: Any, /, fixed_paths: tuple[str, ...] = ("/graphql",), **options: Any) -> None:
        super().__init__(app, **options)
        self.fixed = frozenset(fixed_paths)
        self.children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        # The in-progress gauge's children per method (GET, POST), made once rather than per request.
        self.in_progress = {m: self.requests_in_progress.labels(m, self.app_name) for m in ("GET", "POST")}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] not in self.fixed
            or scope.get("root_path")
            or scope["method"] not in ("GET", "POST")
        ):
            await super().__call__(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        in_progress = self.in_progress[method]
        in_progress.inc()
        status: int | None = None
        begin = time.perf_counter()
        end: float | None = None

        async def timed_send(message: Message) -> None:
            nonlocal status, end
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                end = time.perf_counter()
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        except Exception:
            status = 500
            raise
        finally:
            in_progress.dec()
            if status is None:
                status = 499  # the client left before any response (the library asks the request; it is gone)
            key = (method, path, status)
            children = self.children.get(key)
            if children is None:
                labels = (method, path, status, self.app_name)
                children = (self.request_count.labels(*labels), self.request_time.labels(*labels))
                self.children[key] = children
            children[0].inc()
            children[1].observe((end or time.perf_counter()) - begin)


class RedactTokens(logging.Filter):
    """Replaces download tickets and local presigned tokens in log records (uvicorn's access log prints
    every path): a ticket in a log file is a download anyone reading the log could make."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args and isinstance(record.args, tuple):
            record.args = tuple(_redact(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = _redact(record.msg)
        return True


def _redact(text: str) -> str:
    return _TOKEN_PATH.sub(lambda m: f"/{m.group(1)}/<redacted>", text)


def install_log_redaction() -> None:
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())
