"""Pushes and downloads a large artifact with the SDK (what `modelhub push` / `modelhub download` do), and
prints the rates next to their floors.

Usage: python -m bench.transfer [--size-mib 512] [--stores local,s3]

For each store (the local store, and S3 served by a moto server in its own process), against
`modelhub serve` in a child process on the embedded SecantusDB:
- hash: SHA-256 of the file alone (a push must hash the whole file before it may declare it);
- push: `ModelhubClient.push` (hash, requestUpload, PUT, completeUpload), MB/s of the file;
- verified after: seconds from `completeUpload` until the version's checksum is VERIFIED (at once on the local
  store, which hashes while it receives; on moto the server hashes the object in the background);
- raw GET: the STREAM ticket's URL read by a plain socket (no disk, no hash): the download floor;
- download: `ModelhubClient.download` (ticket, GET to a .part file, SHA-256 while writing, rename), MB/s;
- resume: the same download cut at half and resumed (the first half is hashed again from disk);
- RSS: the server's resident memory before the push and its peak (VmHWM) after everything.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import boto3
import httpx

from bench._common import free_port, rss_kib, start_app, start_moto, stop
from bench.download_throughput import CHUNK, CREDS, fetch, make_artifact
from graphql_api.client import ModelhubClient
from graphql_api.embedded import EmbeddedMongo
from graphql_api.sdk.files import Partial as _Partial
from graphql_api.sdk.files import hash_file as _hash_file

NAME = "bench/transfer"


def _timed(work: object) -> float:
    start = time.perf_counter()
    work()  # type: ignore[operator]
    return time.perf_counter() - start


def _cut_download(client: ModelhubClient, dest: Path, keep: int) -> None:
    """A download interrupted after `keep` bytes, as a killed `modelhub download` leaves it."""
    ticket = client.request_download(NAME)
    partial = _Partial(dest)
    partial.record(NAME, ticket)
    with httpx.stream("GET", ticket.url) as resp, partial.part.open("wb") as fh:
        for chunk in resp.iter_raw(CHUNK):
            fh.write(chunk)
            if fh.tell() >= keep:
                return


def run_store(kind: str, size: int, work: Path, mongo_uri: str) -> dict[str, float]:
    data_dir = work / kind
    source = work / "model.bin"
    env = {
        "MODELHUB_MONGO_URI": mongo_uri,
        "MODELHUB_MONGO_DB": f"bench_transfer_{kind}",
        "MODELHUB_DATA_DIR": str(data_dir),
        "MODELHUB_AUTH": "header",
    }
    moto = None
    if kind == "s3":
        port = free_port()
        moto = start_moto(port)
        endpoint = f"http://127.0.0.1:{port}"
        boto3.client("s3", endpoint_url=endpoint, **CREDS).create_bucket(Bucket="modelhub-artifacts")
        env |= {
            "MODELHUB_STORAGE": "s3",
            "MODELHUB_S3_ENDPOINT_URL": endpoint,
            "MODELHUB_S3_ACCESS_KEY_ID": "bench",
            "MODELHUB_S3_SECRET_ACCESS_KEY": "bench",
        }
    app_port = free_port()
    app = start_app(env, app_port)
    base = f"http://127.0.0.1:{app_port}"
    try:
        with ModelhubClient(base, engineer="bench", timeout=600) as client:
            hashed = _timed(lambda: _hash_file(source))
            rss_before = rss_kib(app.pid)
            pushed = _timed(lambda: client.push(source, NAME, "bench"))
            done = time.perf_counter()
            while client.info(NAME).checksum_status != "VERIFIED":
                time.sleep(0.05)
            verified_after = time.perf_counter() - done
            raw, _, total = fetch(client.request_download(NAME).url)
            assert total == size, (total, size)
            dest = work / f"out-{kind}.bin"
            downloaded = _timed(lambda: client.download(NAME, dest))
            dest.unlink()
            _cut_download(client, dest, size // 2)
            resumed = _timed(lambda: client.download(NAME, dest))
            assert dest.stat().st_size == size
            dest.unlink()
            peak = rss_kib(app.pid, "VmHWM")
        mb = size / 1e6
        return {
            "hash": mb / hashed,
            "push": mb / pushed,
            "verified_s": verified_after,
            "raw": mb / raw,
            "download": mb / downloaded,
            "resume": mb / 2 / resumed,
            "rss_before": rss_before / 1024,
            "rss_peak": peak / 1024,
        }
    finally:
        stop(app)
        if moto:
            stop(moto)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--stores", default="local,s3")
    args = parser.parse_args()
    size = args.size_mib * CHUNK
    with tempfile.TemporaryDirectory(prefix="modelhub-bench-") as tmp:
        work = Path(tmp)
        make_artifact(work / "model.bin", size)
        with EmbeddedMongo(work / "mongo") as mongo:
            print(
                f"artifact {args.size_mib} MiB; DB: embedded SecantusDB; {os.cpu_count()} cores; "
                "MB/s of the file"
            )
            columns = [
                ("hash MB/s", "hash"),
                ("push MB/s", "push"),
                ("verified after s", "verified_s"),
                ("raw GET MB/s", "raw"),
                ("download MB/s", "download"),
                ("resume MB/s", "resume"),
                ("RSS before MiB", "rss_before"),
                ("RSS peak MiB", "rss_peak"),
            ]
            print("store  " + "  ".join(title for title, _ in columns))
            for kind in args.stores.split(","):
                r = run_store(kind, size, work, mongo.uri)
                print(f"{kind:5}  " + "  ".join(f"{r[key]:{len(title)}.1f}" for title, key in columns))


if __name__ == "__main__":
    main()
