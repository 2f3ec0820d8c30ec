"""A webhook receiver on loopback for the tests and the bench: answers as told (200, 500, 503 with
Retry-After, too slowly, or by dropping the connection) and records every request."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Request:
    headers: dict[str, str]
    body: bytes
    answer: str


@dataclass
class Receiver:
    """`plan` holds the answers to give next, in order ("ok", "500", "retry-after", "slow", "drop"); when
    it is empty every request gets `default`. `delay` is slept before each answer."""

    default: str = "ok"
    delay: float = 0.0
    slow_seconds: float = 5.0
    plan: deque[str] = field(default_factory=deque)
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Requests being answered now, and the most there ever were at once.
    active: int = 0
    most_active: int = 0
    # Cleared: requests wait (up to 10 s) before they are answered, to see how many arrive at once.
    gate: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        receiver = self
        self.gate.set()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver.lock:
                    answer = receiver.plan.popleft() if receiver.plan else receiver.default
                    receiver.requests.append(
                        Request({k.lower(): v for k, v in self.headers.items()}, body, answer)
                    )
                    receiver.active += 1
                    receiver.most_active = max(receiver.most_active, receiver.active)
                try:
                    self.answer(answer)
                finally:
                    with receiver.lock:
                        receiver.active -= 1

            def answer(self, answer: str) -> None:
                receiver.gate.wait(10)
                if receiver.delay:
                    time.sleep(receiver.delay)
                if answer == "drop":
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                if answer == "slow":
                    time.sleep(receiver.slow_seconds)
                status = {"ok": 200, "500": 500, "retry-after": 503, "slow": 200, "redirect": 302}[answer]
                self.send_response(status)
                if answer == "retry-after":
                    self.send_header("Retry-After", "1")
                if answer == "redirect":
                    self.send_header("Location", "http://127.0.0.1:9/elsewhere")
                payload = b"x" * 100_000 if answer == "ok" else b"no"
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                with contextlib.suppress(OSError):
                    self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def delivered(self) -> list[Request]:
        """The requests answered 2xx, in the order they arrived."""
        with self.lock:
            return [r for r in self.requests if r.answer in ("ok",)]
