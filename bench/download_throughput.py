"""Streams a large artifact through the API and reads it straight from the store, and prints both rates.

Usage: python bench/download_throughput.py [--size-mib 1024] [--stores local,s3]

For each store (the local store, and S3 served by a moto server in its own process) it prints MB/s through
`/downloads/{ticket}`, MB/s reading the store directly in the same run, their ratio, time to first byte, and
the server's RSS before and its peak (VmHWM) after. The DB is the embedded SecantusDB (child process).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import aioboto3
import boto3
import httpx
from botocore.config import Config

from bench._common import free_port, rss_kib, start_app, start_moto, stop
from graphql_api.embedded import EmbeddedMongo

CHUNK = 1024 * 1024
BUCKET = "bench"
KEY = "big/model.bin"
CREDS = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench", "region_name": "us-east-1"}


def make_artifact(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    block = os.urandom(CHUNK)
    with path.open("wb") as fh:
        for _ in range(size // CHUNK):
            fh.write(block)


async def read_local(path: Path) -> tuple[float, float]:
    start = time.perf_counter()
    first = 0.0
    with path.open("rb") as fh:
        while await asyncio.to_thread(fh.read, CHUNK):
            first = first or time.perf_counter() - start
    return time.perf_counter() - start, first


async def read_s3(endpoint: str) -> tuple[float, float]:
    session = aioboto3.Session()
    async with session.client(
        "s3", endpoint_url=endpoint, config=Config(signature_version="s3v4"), **CREDS
    ) as s3:
        start = time.perf_counter()
        first = 0.0
        resp = await s3.get_object(Bucket=BUCKET, Key=KEY)
        body = resp["Body"]
        async with body:
            while await body.read(CHUNK):
                first = first or time.perf_counter() - start
        return time.perf_counter() - start, first


def fetch(url: str) -> tuple[float, float, int]:
    """GET with a plain socket and recv_into one reused buffer, so the client is not the bottleneck."""
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with socket.create_connection((parts.hostname, parts.port or 80)) as sock:
        start = time.perf_counter()
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(65536)
        ttfb = time.perf_counter() - start
        header, _, body = head.partition(b"\r\n\r\n")
        status = header.split(b" ", 2)[1]
        assert status == b"200", header
        length = int(
            next(h for h in header.split(b"\r\n") if h.lower().startswith(b"content-length")).split(b":")[1]
        )
        total = len(body)
        while total < length:
            n = sock.recv_into(view)
            if not n:
                break
            total += n
        return time.perf_counter() - start, ttfb, total


TICKET = """mutation {
  requestDownload(input: {name: "big", mode: STREAM}) {
    __typename ... on DownloadTicket { url } ... on UserError { code message } } }"""
REGISTER = """mutation($b: String!, $k: String!) {
  registerModel(input: {name: "big", projectName: "bench", bucket: $b, key: $k}) {
    __typename ... on UserError { code message } } }"""


async def through_api(base: str) -> tuple[float, float, int]:
    async with httpx.AsyncClient(base_url=base, timeout=600) as client:
        ticket = (await client.post("/graphql", json={"query": TICKET})).json()["data"]["requestDownload"]
    assert ticket["__typename"] == "DownloadTicket", ticket
    return await asyncio.to_thread(fetch, ticket["url"])


def register(base: str) -> None:
    body = {"query": REGISTER, "variables": {"b": BUCKET, "k": KEY}}
    result = httpx.post(f"{base}/graphql", json=body, timeout=60).json()["data"]["registerModel"]
    assert result["__typename"] == "ModelVersion", result


async def run_store(kind: str, size: int, work: Path, mongo_uri: str) -> dict[str, float]:
    data_dir = work / kind
    env = {
        "MODELHUB_MONGO_URI": mongo_uri,
        "MODELHUB_MONGO_DB": f"bench_{kind}",
        "MODELHUB_DATA_DIR": str(data_dir),
    }
    moto = None
    artifact = data_dir / "objects" / BUCKET / KEY
    make_artifact(artifact, size)
    if kind == "s3":
        port = free_port()
        moto = start_moto(port)
        endpoint = f"http://127.0.0.1:{port}"
        s3 = boto3.client("s3", endpoint_url=endpoint, **CREDS)
        s3.create_bucket(Bucket=BUCKET)
        s3.upload_file(str(artifact), BUCKET, KEY)
        artifact.unlink()
        env.update(
            MODELHUB_STORAGE="s3",
            MODELHUB_S3_ENDPOINT_URL=endpoint,
            MODELHUB_S3_ACCESS_KEY_ID="bench",
            MODELHUB_S3_SECRET_ACCESS_KEY="bench",
        )
    app_port = free_port()
    app = start_app(env, app_port)
    base = f"http://127.0.0.1:{app_port}"
    try:
        register(base)
        direct, direct_ttfb = await (read_s3(endpoint) if kind == "s3" else read_local(artifact))
        rss_before = rss_kib(app.pid)
        api, ttfb, total = await through_api(base)
        assert total == size, (total, size)
        peak = rss_kib(app.pid, "VmHWM")
        return {
            "api_mb_s": size / api / 1e6,
            "direct_mb_s": size / direct / 1e6,
            "ratio": direct / api,  # = API MB/s / direct MB/s
            "ttfb_ms": ttfb * 1000,
            "direct_ttfb_ms": direct_ttfb * 1000,
            "rss_before_mib": rss_before / 1024,
            "rss_peak_mib": peak / 1024,
            "rss_growth_mib": (peak - rss_before) / 1024,
        }
    finally:
        stop(app)
        if moto:
            stop(moto)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--stores", default="local,s3")
    args = parser.parse_args()
    size = args.size_mib * CHUNK
    with tempfile.TemporaryDirectory(prefix="modelhub-bench-") as tmp:
        work = Path(tmp)
        with EmbeddedMongo(work / "mongo") as mongo:
            print(
                f"artifact {args.size_mib} MiB; DB: embedded SecantusDB ({mongo.uri}); {os.cpu_count()} cores"
            )
            columns = [
                ("API MB/s", "api_mb_s"),
                ("direct MB/s", "direct_mb_s"),
                ("API/direct", "ratio"),
                ("TTFB ms", "ttfb_ms"),
                ("direct TTFB ms", "direct_ttfb_ms"),
                ("RSS before MiB", "rss_before_mib"),
                ("RSS peak MiB", "rss_peak_mib"),
                ("growth MiB", "rss_growth_mib"),
            ]
            print("store  " + "  ".join(title for title, _ in columns))
            for kind in args.stores.split(","):
                r = await run_store(kind, size, work, mongo.uri)
                cells = [f"{r[key]:{len(title)}.{2 if key == 'ratio' else 1}f}" for title, key in columns]
                print(f"{kind:5}  " + "  ".join(cells))


if __name__ == "__main__":
    asyncio.run(main())
