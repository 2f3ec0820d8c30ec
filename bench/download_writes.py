"""Counts the MongoDB commands (writes, and the reads beside them) of each kind of download's request path.

Usage: python -m bench.download_writes [--repeat 5]

It starts an embedded SecantusDB in a temporary directory and the app in this process (header identities,
the local store), registers a model, and for each kind of download (a one-step streamed download, a STREAM
ticket and its download, a PRESIGNED ticket, a reportDownloadVerification) counts the write commands
(insert, update, delete, findAndModify), and the other commands (reads: find, aggregate, count, ...), that
a pymongo CommandListener sees while that request runs: a context variable set around each request marks
its commands and those of tasks it starts, so the app's background tasks (the roller, the sweeper, the
audit log's inserts) are left out. Each kind runs once to warm up (an engineer's first download numbers the
engineer) and then `--repeat` times; it prints the writes per download, by collection, and the reads. Run
it with PYTHONPATH at another checkout for a before/after (the script itself imports only the app's public
entry points).
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import tempfile
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from pymongo import monitoring
from secantus import SecantusDBServer

from graphql_api.app import create_app
from graphql_api.config import Settings

WRITES = {"insert", "update", "delete", "findAndModify"}
# The driver's own commands, not the app's work.
IGNORED = {"hello", "ismaster", "isMaster", "ping", "endSessions", "buildInfo", "saslStart", "saslContinue"}
HEADERS = {"X-Engineer-ID": "bench"}
REGISTER = """mutation($input: RegisterModelInput!) { registerModel(input: $input) { __typename } }"""
TICKET = """mutation($mode: DownloadMode!) { requestDownload(input: {name: "m", mode: $mode}) {
  __typename ... on DownloadTicket { url download { id } } } }"""
VERIFY = """mutation($d: ID!) { reportDownloadVerification(input: {download: $d, sha256Matches: true}) {
  __typename } }"""

# The download kind whose request is running (None: not a request being counted).
counting: contextvars.ContextVar[str | None] = contextvars.ContextVar("counting", default=None)


class Writes(monitoring.CommandListener):
    """Write commands per (kind, collection) and the other commands per kind, counted while a request of
    that kind runs."""

    def __init__(self) -> None:
        self.seen: Counter[tuple[str, str]] = Counter()
        self.reads: Counter[str] = Counter()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        kind = counting.get()
        if kind is None or event.command_name in IGNORED:
            return
        if event.command_name in WRITES:
            self.seen[kind, str(event.command.get(event.command_name))] += 1
        else:
            self.reads[kind] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def counted(app: Any) -> Any:
    """The ASGI app with each request's kind (header `x-bench-kind`) in `counting` while it runs."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        headers = dict(scope.get("headers") or [])
        kind = headers.get(b"x-bench-kind")
        token = counting.set(kind.decode() if kind else None)
        try:
            await app(scope, receive, send)
        finally:
            counting.reset(token)

    return wrapped


async def _settle(seconds: float = 0.3) -> None:
    """Lets a streamed download's finish (written as its body ends) land before the next request."""
    await asyncio.sleep(seconds)


async def run(uri: str, data_dir: Path, repeat: int) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    listener = Writes()
    monitoring.register(listener)
    settings = Settings(
        mongo_uri=uri, mongo_db="bench_writes", data_dir=data_dir, auth="header", storage="local",
        signing_secret="bench-secret-of-at-least-32-characters", rate_limit_per_minute=0,
    )  # fmt: skip
    objects = settings.objects_dir / "bench"
    objects.mkdir(parents=True, exist_ok=True)
    (objects / "m.bin").write_bytes(b"x" * 100_000)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=counted(app))
        async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=30) as http:

            async def gql(query: str, variables: dict[str, Any], kind: str | None = None) -> Any:
                headers = {**HEADERS, **({"x-bench-kind": kind} if kind else {})}
                body = (
                    await http.post(
                        "/graphql", json={"query": query, "variables": variables}, headers=headers
                    )
                ).json()
                assert not body.get("errors"), body
                return body["data"]

            model = {"name": "m", "projectName": "p", "bucket": "bench", "key": "m.bin"}
            await gql(REGISTER, {"input": model})

            async def one_step(kind: str | None) -> None:
                headers = {**HEADERS, **({"x-bench-kind": kind} if kind else {})}
                assert (await http.get("/models/m/download", headers=headers)).status_code == 200

            async def stream_ticket(kind: str | None) -> None:
                ticket = (await gql(TICKET, {"mode": "STREAM"}, kind))["requestDownload"]
                headers = {**HEADERS, **({"x-bench-kind": kind} if kind else {})}
                assert (await http.get(ticket["url"], headers=headers)).status_code == 200

            async def presigned(kind: str | None) -> None:
                await gql(TICKET, {"mode": "PRESIGNED"}, kind)

            async def verification(kind: str | None) -> None:
                ticket = (await gql(TICKET, {"mode": "PRESIGNED"}))["requestDownload"]
                await gql(VERIFY, {"d": ticket["download"]["id"]}, kind)

            kinds: dict[str, Callable[[str | None], Awaitable[None]]] = {
                "one-step streamed": one_step,
                "STREAM ticket + download": stream_ticket,
                "PRESIGNED ticket": presigned,
                "reportDownloadVerification": verification,
            }
            for name, step in kinds.items():
                await step(None)  # warm-up: the engineer's number, caches
                await _settle()
                for _ in range(repeat):
                    await step(name)
                    await _settle()
    out: dict[str, dict[str, float]] = {name: {} for name in kinds}
    for (kind, collection), n in listener.seen.items():
        out[kind][collection] = n / repeat
    return out, {name: listener.reads[name] / repeat for name in kinds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = SecantusDBServer(storage_path=str(Path(tmp) / "db"), port=0)
        server.start()
        try:
            uri = str(server.uri)
            uri += ("&" if "?" in uri else ("?" if uri.endswith("/") else "/?")) + "retryWrites=false"
            found, reads = asyncio.run(run(uri, Path(tmp) / "data", args.repeat))
        finally:
            server.stop()
    print(f"MongoDB commands on the request path per download (mean of {args.repeat}): writes, reads")
    for kind, by_collection in found.items():
        detail = ", ".join(f"{c} {n:g}" for c, n in sorted(by_collection.items()))
        print(f"  {kind:28} {sum(by_collection.values()):5g} {reads[kind]:5g}   ({detail or 'none'})")


if __name__ == "__main__":
    main()
