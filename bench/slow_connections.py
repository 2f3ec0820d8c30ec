"""Slow connections against `modelhub serve`: how long they are held, and whether the server still answers.

Usage: python -m bench.slow_connections [--connections 3000] [--seconds 60] [--byte-every 1.0] [--stall-body]

Starts `modelhub serve` (embedded SecantusDB, header mode, the default connection limits unless MODELHUB_*
variables say otherwise) in a child process, opens the given number of connections at once, and on each
sends a request's headers one byte every `--byte-every` seconds (slowloris), or with `--stall-body` whole
headers and then a body that never comes. Prints how many were refused at once (503), how long the others
were held (median, max; "held for the whole run" if the server never closed them), and the latency of a
normal `/healthz` request probed every 0.5 s meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time

import httpx

from bench._common import free_port, start_app, stop


async def slow_client(port: int, args: argparse.Namespace, outcome: list[tuple[str, float]]) -> None:
    started = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        outcome.append(("connect failed", 0.0))
        return
    if args.stall_body:
        head = b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        writer.write(head + b"Content-Length: 1000\r\n\r\n{")
        payload = b""
    else:
        payload = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 100_000

    async def feed() -> None:
        for byte in payload:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(args.byte_every)

    feeding = asyncio.create_task(feed())
    first = b""
    try:
        async with asyncio.timeout(args.seconds):
            first = await reader.read(64)
            while await reader.read(65536):
                pass
        held = time.monotonic() - started
        kind = "refused (503)" if first.startswith(b"HTTP/1.1 503") else f"closed ({first[9:12].decode()})"
        outcome.append((kind, held))
    except TimeoutError:
        outcome.append(("held for the whole run", args.seconds))
    except OSError:
        outcome.append(("reset", time.monotonic() - started))
    finally:
        feeding.cancel()
        with contextlib.suppress(OSError):
            writer.close()


async def probe(url: str, stop_at: float, latencies: list[float], failures: list[str]) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            try:
                resp = await http.get(url)
                if resp.status_code == 200:
                    latencies.append(time.perf_counter() - started)
                else:
                    failures.append(str(resp.status_code))
            except httpx.HTTPError as exc:
                failures.append(type(exc).__name__)
            await asyncio.sleep(0.5)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--byte-every", type=float, default=1.0)
    parser.add_argument("--stall-body", action="store_true")
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as data_dir:
        proc = start_app({"MODELHUB_DATA_DIR": data_dir, "MODELHUB_AUTH": "header",
                          "MODELHUB_ACCESS_LOG": "false"}, port)  # fmt: skip
        try:
            outcome: list[tuple[str, float]] = []
            latencies: list[float] = []
            failures: list[str] = []
            started = time.monotonic()
            clients = [slow_client(port, args, outcome) for _ in range(args.connections)]
            watcher = probe(f"http://127.0.0.1:{port}/healthz", started + args.seconds, latencies, failures)
            await asyncio.gather(*clients, watcher)
        finally:
            stop(proc)
    what = "a body that stalls" if args.stall_body else f"headers at one byte per {args.byte_every:g} s"
    print(f"{args.connections} connections sending {what}, watched for up to {args.seconds:g} s")
    for kind in sorted({k for k, _ in outcome}):
        held = [h for k, h in outcome if k == kind]
        print(f"  {kind}: {len(held)}, held median {statistics.median(held):.1f} s, max {max(held):.1f} s")
    if latencies:
        latencies.sort()
        p95 = latencies[int(0.95 * (len(latencies) - 1))]
        median = statistics.median(latencies) * 1000
        print(f"  /healthz meanwhile: {len(latencies)} answered, median {median:.0f} ms, "
              f"p95 {p95 * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms")  # fmt: skip
    print(f"  /healthz failures meanwhile: {len(failures)} {sorted(set(failures))}")


if __name__ == "__main__":
    asyncio.run(main())
