"""Seeded random fuzzing of the download routes (paths, query values, Range and conditional headers,
identities): every answer is below 500, and every error is JSON with a code and no path or endpoint."""

from __future__ import annotations

import random
from urllib.parse import quote

import httpx
import pytest

from tests.http.test_downloads import register
from tests.servers import GraphQLClient, Stores

CASES = 300
PIECES = ["0", "1", "-", "=", ",", " ", "bytes", "items", "9" * 30, "\u00b2", "\u0661", "\u00e9", "%", "..", "/",
          "\x00", "\"", "W/", "*", "A" * 300, "m", "prod", "é"]  # fmt: skip


def noise(rng: random.Random, parts: int = 4) -> str:
    return "".join(rng.choice(PIECES) for _ in range(rng.randrange(parts + 1)))


def header_value(rng: random.Random) -> bytes:
    text = noise(rng).replace("\x00", "")
    return text.encode("utf-8")[:2000]


@pytest.mark.parametrize("store_kind", ["local"])
async def test_route_fuzz_never_500s(
    gql: GraphQLClient, http: httpx.AsyncClient, stores: Stores, bucket: str
) -> None:
    """300 random requests over the three download routes get < 500, and errors are typed JSON."""
    await register(gql, stores, bucket, b"x" * 5000)
    rng = random.Random(20261127)
    for _ in range(CASES):
        route = rng.randrange(3)
        if route == 0:
            path = "/downloads/" + quote(noise(rng, 6) or "t", safe="")
        elif route == 1:
            path = "/objects/" + quote(noise(rng, 6) or "t", safe="")
        else:
            name = rng.choice(["m", quote(noise(rng), safe="") or "m"])
            query = rng.choice(
                ["", f"?version={quote(noise(rng), safe='')}", f"?alias={quote(noise(rng), safe='')}"]
            )
            path = f"/models/{name}/download{query}"
        headers = {"X-Engineer-ID": rng.choice([b"alice", header_value(rng)])}
        for name in ("Range", "If-Range", "If-None-Match"):
            if rng.random() < 0.5:
                headers[name] = rng.choice([b"bytes=" + header_value(rng), header_value(rng)])
        method = rng.choice(["GET", "HEAD"])
        resp = await http.request(method, path, headers=headers)
        assert resp.status_code < 500, (method, path, headers, resp.text)
        if resp.status_code >= 400 and method == "GET" and resp.status_code != 404:
            error = resp.json()["error"]
            assert error["code"] and error["message"], (path, error)
            assert "/tmp" not in resp.text and "://" not in resp.text, resp.text
        elif resp.status_code == 404 and method == "GET":
            assert resp.headers.get("content-type", "").startswith("application/json"), (path, resp.text)
