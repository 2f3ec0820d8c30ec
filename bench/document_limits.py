"""How long the server takes to refuse a document of nested fragment spreads, and how long a concurrent
trivial query waits meanwhile.

Usage: python -m bench.document_limits [--levels 6,8,12] [--timeout 30]

Starts the embedded SecantusDB and `modelhub serve` (header mode, one worker) as child processes, then for
each level count sends the document (fragment F1 spreads F2 ten times, F2 spreads F3 ten times, ...;
written with named spreads, and with each spread inside an inline fragment) with `{ __typename }`
alongside, and prints both times (best of three, each a document never seen before) and the refusal's
error code. A request still unanswered after `--timeout` seconds is printed as such (the server is then
stopped: it may not answer anything for long).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench._common import app_env, free_port, start_app, stop
from graphql_api.embedded import EmbeddedMongo


def nested(levels: int, inline: bool, nonce: int = 0) -> str:
    """The document; `nonce` names its operation, so that no cache holds its parse or validation."""
    spread = (lambda i: f"... on Query {{ ...F{i} }}") if inline else (lambda i: f"...F{i}")
    parts = [f"query Nested{nonce} {{ ...F1 }}"]
    for i in range(1, levels):
        parts.append(f"fragment F{i} on Query {{ " + " ".join([spread(i + 1)] * 10) + " }")
    parts.append(f"fragment F{levels} on Query {{ __typename }}")
    return "\n".join(parts)


async def timed(http: httpx.AsyncClient, query: str, limit: float) -> tuple[float, Any]:
    started = time.perf_counter()
    try:
        body = (await http.post("/graphql", json={"query": query}, timeout=limit)).json()
    except httpx.TimeoutException:
        return time.perf_counter() - started, None
    return time.perf_counter() - started, body


async def measure(url: str, levels: list[int], limit: float) -> None:
    async with httpx.AsyncClient(base_url=url) as http:
        await timed(http, "{ __typename }", limit)
        for level in levels:
            for inline in (False, True):
                best: tuple[float, float, Any] | None = None
                for attempt in range(3):
                    document = nested(level, inline, nonce=attempt)
                    (took, body), (quick, _) = await asyncio.gather(
                        timed(http, document, limit), timed(http, "{ __typename }", limit)
                    )
                    if best is None or took < best[0]:
                        best = (took, quick, body)
                    if body is None:
                        break
                assert best is not None
                took, quick, body = best
                shape = "inline" if inline else "named"
                if body is None:
                    print(f"{level:>2} levels {shape:<6} {len(document):>5} B: no answer in {limit:.0f} s")
                    return
                code = (body.get("errors") or [{}])[0].get("extensions", {}).get("code")
                print(
                    f"{level:>2} levels {shape:<6} {len(document):>5} B: refused in {took * 1000:7.1f} ms "
                    f"({code}); concurrent {{ __typename }} {quick * 1000:7.1f} ms"
                )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--levels", default="6,8,12")
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, EmbeddedMongo(Path(tmp) / "db") as mongo:
        port = free_port()
        app = start_app(app_env(mongo.uri, Path(tmp) / "data"), port)
        try:
            levels = [int(n) for n in args.levels.split(",")]
            asyncio.run(measure(f"http://127.0.0.1:{port}", levels, args.timeout))
        finally:
            stop(app)


if __name__ == "__main__":
    main()
