"""The SDK against a live server: push, list, info, stats and verified, resumable downloads; typed errors."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from graphql_api.client import (
    AsyncModelhubClient,
    ChecksumMismatchError,
    DownloadResult,
    DownloadTicket,
    InvalidInputError,
    Model,
    ModelhubClient,
    ModelVersion,
    NotFoundError,
    Page,
    StatsRow,
    UnavailableError,
    parse_ref,
)
from tests.servers import LiveServer, Stores, free_port


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def wait_until(probe: Any, seconds: float = 20.0) -> Any:
    deadline = time.monotonic() + seconds
    while not (value := probe()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return value


def test_push_list_info_download_on_both_stores(live: LiveServer, tmp_path: Path) -> None:
    """push → list → info → download is byte-exact on both stores, verified against the server's SHA-256."""
    data = os.urandom(3 * 1024 * 1024 + 5)
    src = tmp_path / "model.bin"
    src.write_bytes(data)
    seen: list[tuple[int, int]] = []
    with ModelhubClient(live.url, engineer="sdk") as client:
        made = client.push(src, "sdk/model", "p", tags=["x"], progress=lambda d, t: seen.append((d, t)))
        assert isinstance(made, ModelVersion) and made.ref == "sdk/model@1"
        assert made.size_bytes == len(data) and made.tags == ("x",) and made.project_name == "p"
        assert seen[-1] == (len(data), len(data))
        (listed,) = client.list(projectNames=["p"])
        assert isinstance(listed, Model) and listed.name == "sdk/model" and listed.latest_version is not None
        assert listed.latest_version.version == 1 and listed.latest_version.size_bytes == len(data)
        assert wait_until(lambda: client.info("sdk/model").checksum_status == "VERIFIED")
        info = client.info("sdk/model@1")
        assert info.sha256 == sha(data) and info.storage_uri.startswith("s3://modelhub-artifacts/")
        assert info.id == made.id and info.created_at.tzinfo is not None and info.last_downloaded_at is None
        assert info.model is not None and info.model.download_count == 0
        result = client.download("sdk/model", tmp_path / "out.bin")
        assert isinstance(result, DownloadResult) and result.path == tmp_path / "out.bin"
        assert result.sha256 == sha(data) and result.verified and result.resumed_from == 0
        assert (tmp_path / "out.bin").read_bytes() == data
        assert not (tmp_path / "out.bin.part").exists() and not (tmp_path / "out.bin.part.json").exists()
        second = client.push(src, "sdk/model", "p")
        assert second.version == 2
        assert wait_until(lambda: client.stats(["model"])[0].completed == 1)
        (row,) = client.stats(["model", "version"], interval="DAY")
        assert isinstance(row, StatsRow) and (row.model_name, row.version, row.downloads) == (
            "sdk/model",
            1,
            1,
        )
        assert row.period_start is not None and row.total_bytes == len(data)


def _interrupted(client: ModelhubClient, dest: Path, name: str, keep: int) -> str:
    """A download cut off by its client after `keep` bytes, as a crash would leave it: `.part` + record."""
    from graphql_api.sdk.files import Partial as _Partial

    ticket = client.request_download(name)
    partial = _Partial(dest)
    partial.record(name, ticket)
    with httpx.stream("GET", ticket.url) as resp, partial.part.open("wb") as fh:
        for chunk in resp.iter_raw(64 * 1024):
            fh.write(chunk)
            if fh.tell() >= keep:
                break
    return ticket.download_id


@pytest.mark.parametrize("store_kind", ["local"])
def test_resume_counts_one_download_and_repairs_corruption(live: LiveServer, tmp_path: Path) -> None:
    """An interrupted download resumes (Range + If-Range + resumes) into one counted download; a corrupted
    `.part` is detected by its SHA-256, deleted and downloaded again; a changed ETag restarts from byte 0."""
    data = os.urandom(8 * 1024 * 1024)
    src = tmp_path / "m.bin"
    src.write_bytes(data)
    with ModelhubClient(live.url, engineer="sdk") as client:
        client.push(src, "r", "p")
        dest = tmp_path / "r.bin"
        _interrupted(client, dest, "r", 1024 * 1024)
        have = dest.with_name("r.bin.part").stat().st_size

        def aborted() -> bool:
            rows = client.graphql("{ downloads { nodes { status } } }")["downloads"]["nodes"]
            return bool(rows and rows[0]["status"] == "ABORTED")

        assert wait_until(aborted)
        resumed = client.download("r", dest)
        assert resumed.resumed_from == have and resumed.bytes_written == len(data) - have and resumed.verified
        assert dest.read_bytes() == data
        assert wait_until(lambda: client.info("r").download_count == 1)

        _interrupted(client, dest, "r", 1024 * 1024)
        part = dest.with_name("r.bin.part")
        part.write_bytes(os.urandom(part.stat().st_size))  # same length, wrong bytes
        repaired = client.download("r", dest)
        assert repaired.resumed_from == 0 and repaired.verified and dest.read_bytes() == data

        _interrupted(client, dest, "r", 1024 * 1024)
        meta = dest.with_name("r.bin.part.json")
        record = json.loads(meta.read_text())
        meta.write_text(json.dumps({**record, "etag": '"an-older-object"'}))
        restarted = client.download("r", dest)
        assert restarted.resumed_from == 0 and restarted.bytes_written == len(data)
        assert dest.read_bytes() == data


@pytest.mark.parametrize("store_kind", ["local"])
def test_typed_errors(live: LiveServer, stores: Stores, bucket: str, tmp_path: Path) -> None:
    """Result errors and outages are typed exceptions with the server's code."""
    with ModelhubClient(live.url, engineer="sdk") as client:
        with pytest.raises(NotFoundError) as missing:
            client.download("nope", tmp_path / "c.bin")
        assert missing.value.code == "MODEL_NOT_FOUND"
        stores.put(bucket, "w.bin", b"w")
        with pytest.raises(InvalidInputError) as bad:
            client.register("bad name", "p", bucket, "w.bin")
        assert bad.value.code == "INVALID_INPUT" and bad.value.details["field"] == "name"
        client.register("w", "p", bucket, "w.bin", sha256="0" * 64)
        assert wait_until(lambda: client.info("w").checksum_status == "MISMATCH")
        with pytest.raises(ChecksumMismatchError):
            client.download("w", tmp_path / "w")
        with pytest.raises(NotFoundError):
            client.info("nope")
    with ModelhubClient(f"http://127.0.0.1:{free_port()}") as down, pytest.raises(UnavailableError) as err:
        down.list()
    assert err.value.code == "UNREACHABLE"


async def test_async_client_round_trip(live: LiveServer, tmp_path: Path) -> None:
    """The async client pushes, lists, downloads (verified) and raises the same typed errors."""
    data = os.urandom(1024 * 1024 + 1)
    src = tmp_path / "a.bin"
    src.write_bytes(data)
    async with AsyncModelhubClient(live.url, engineer="async") as client:
        made = await client.push(src, "async/m", "p")
        assert made.version == 1
        assert [m.name for m in await client.models()] == ["async/m"]
        result = await client.download("async/m", tmp_path / "b.bin", presigned=True)
        assert (tmp_path / "b.bin").read_bytes() == data and result.sha256 == sha(data)
        with pytest.raises(NotFoundError):
            await client.info("async/m", version=9)


def test_pages_and_tickets_are_typed(live: LiveServer, tmp_path: Path) -> None:
    """`models_page` walks the catalogue (newest first) a page at a time by `end_cursor`; `request_download` returns a typed
    ticket; results are frozen."""
    src = tmp_path / "m.bin"
    src.write_bytes(b"typed")
    with ModelhubClient(live.url, engineer="sdk") as client:
        for n in range(3):
            client.push(src, f"paged/m{n}", "p")
        first = client.models_page(2, namePrefix="paged/")
        assert isinstance(first, Page) and [m.name for m in first.items] == ["paged/m2", "paged/m1"]
        assert first.has_next_page and first.end_cursor
        rest = client.models_page(2, first.end_cursor, namePrefix="paged/")
        assert [m.name for m in rest.items] == ["paged/m0"] and not rest.has_next_page
        ticket = client.request_download("paged/m1")
        assert isinstance(ticket, DownloadTicket) and ticket.mode == "STREAM" and ticket.size == 5
        assert ticket.expires_at.tzinfo is not None and ticket.version == 1
        with pytest.raises(AttributeError):
            ticket.url = "elsewhere"  # type: ignore[misc]


def test_refs_parse() -> None:
    """NAME, NAME@3 and NAME@prod name the latest, a version and an alias."""
    assert parse_ref("a/b") == ("a/b", None, None)
    assert parse_ref("a/b@3") == ("a/b", 3, None)
    assert parse_ref("a/b@prod") == ("a/b", None, "prod")
