"""A request body's read timeout: the longest pause between two chunks, as an ASGI wrapper."""

from __future__ import annotations

import asyncio
import json

from .server import ASGIApp, Message, Receive, Scope, Send

_BODY_TIMED_OUT = json.dumps(
    {"error": {"code": "REQUEST_TIMEOUT", "message": "the request body stopped arriving"}}
).encode()


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
