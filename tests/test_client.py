"""The SDK against a live server: register, list, download with sha256, and resume a partial file."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from graphql_api.client import ModelhubClient, ModelhubError
from tests.servers import LiveServer, Stores

pytestmark = pytest.mark.parametrize("store_kind", ["local"])


def test_register_list_download_resume(live: LiveServer, stores: Stores, bucket: str, tmp_path: Path) -> None:
    """A download lands byte-exact; a partial `.part` file is resumed with Range and ends identical."""
    data = os.urandom(3 * 1024 * 1024 + 5)
    stores.put(bucket, "w.bin", data)
    with ModelhubClient(live.url, engineer="sdk") as client:
        made = client.register("sdk/model", "p", bucket, "w.bin", tags=["x"])
        assert made["version"] == 1 and made["sizeBytes"] == len(data)
        assert [m["name"] for m in client.models(projectNames=["p"])] == ["sdk/model"]
        result = client.download("sdk/model", tmp_path / "a.bin")
        assert result.sha256 == hashlib.sha256(data).hexdigest() and result.resumed_from == 0
        part = tmp_path / "b.bin.part"
        part.write_bytes(data[:1_000_000])
        resumed = client.download("sdk/model", tmp_path / "b.bin")
        assert resumed.resumed_from == 1_000_000 and resumed.bytes_written == len(data) - 1_000_000
        assert (tmp_path / "b.bin").read_bytes() == data and not part.exists()
        with pytest.raises(ModelhubError) as err:
            client.download("nope", tmp_path / "c.bin")
        assert err.value.code == "MODEL_NOT_FOUND"
        with pytest.raises(ModelhubError) as err:
            client.register("bad name", "p", bucket, "w.bin")
        assert err.value.code == "INVALID_INPUT"
