"""A small synchronous SDK for modelhub over HTTP (httpx only: it imports no server module)."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

CHUNK = 1024 * 1024


class ModelhubError(Exception):
    """The server answered with an error: a typed result error, a GraphQL error, or an HTTP error."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class DownloadResult:
    path: Path
    bytes_written: int
    resumed_from: int
    sha256: str | None
    seconds: float


REQUEST_DOWNLOAD = """
mutation RequestDownload($input: RequestDownloadInput!) {
  requestDownload(input: $input) {
    __typename
    ... on DownloadTicket { url mode expiresAt download { id version sizeBytes } }
    ... on UserError { code message }
  }
}"""

REGISTER = """
mutation RegisterModel($input: RegisterModelInput!) {
  registerModel(input: $input) {
    __typename
    ... on ModelVersion { id name version sizeBytes storageUri createdAt }
    ... on UserError { code message }
  }
}"""

MODELS = """
query ListModels($first: Int!, $after: String, $filter: ModelFilter) {
  models(first: $first, after: $after, filter: $filter) {
    pageInfo { hasNextPage endCursor }
    nodes {
      name projectName owner createdAt downloadCount
      latestVersion { version sizeBytes }
      aliases { alias version }
    }
  }
}"""


class ModelhubClient:
    """Talks to one modelhub server with a bearer `token` (token mode) or an `engineer` name sent as
    X-Engineer-ID (header mode)."""

    def __init__(
        self, base_url: str, engineer: str | None = None, timeout: float = 60.0, token: str | None = None
    ) -> None:
        headers = {"X-Engineer-ID": engineer} if engineer else {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)

    def __enter__(self) -> ModelhubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        resp = self.http.post("/graphql", json={"query": query, "variables": variables or {}})
        if resp.status_code >= 400 and "application/json" not in resp.headers.get("content-type", ""):
            raise ModelhubError(f"HTTP_{resp.status_code}", resp.text[:200])
        body = resp.json()
        if body.get("errors"):
            error = body["errors"][0]
            raise ModelhubError(error.get("extensions", {}).get("code", "GRAPHQL_ERROR"), error["message"])
        data: dict[str, Any] = body["data"]
        return data

    @staticmethod
    def _result(value: dict[str, Any]) -> dict[str, Any]:
        if "code" in value and "message" in value:
            raise ModelhubError(value["code"], value["message"])
        return value

    def register(self, name: str, project: str, bucket: str, key: str, **optional: Any) -> dict[str, Any]:
        variables = {
            "input": {"name": name, "projectName": project, "bucket": bucket, "key": key, **optional}
        }
        return self._result(self.graphql(REGISTER, variables)["registerModel"])

    def models(self, **filter: Any) -> list[dict[str, Any]]:
        """Every model matching `filter` (a ModelFilter: names, namePrefix, projectNames, owners, tags...),
        following the pages."""
        rows: list[dict[str, Any]] = []
        after = None
        while True:
            page = self.graphql(MODELS, {"first": 100, "after": after, "filter": filter or None})["models"]
            rows += page["nodes"]
            if not page["pageInfo"]["hasNextPage"]:
                return rows
            after = page["pageInfo"]["endCursor"]

    def request_download(
        self,
        name: str,
        version: int | None = None,
        mode: str = "STREAM",
        expires_in: int | None = None,
        alias: str | None = None,
    ) -> dict[str, Any]:
        request = {"name": name, "version": version, "alias": alias, "mode": mode, "expiresIn": expires_in}
        variables = {"input": {k: v for k, v in request.items() if v is not None}}
        return self._result(self.graphql(REQUEST_DOWNLOAD, variables)["requestDownload"])

    def download(
        self, name: str, dest: Path, version: int | None = None, resume: bool = True
    ) -> DownloadResult:
        """Streams an artifact to `dest` via `<dest>.part`; an existing part file is resumed with Range."""
        started = time.perf_counter()
        ticket = self.request_download(name, version)
        size = int(ticket["download"]["sizeBytes"])
        part = dest.with_name(dest.name + ".part")
        offset = part.stat().st_size if resume and part.exists() else 0
        if offset > size:
            offset = 0
        headers = {"Range": f"bytes={offset}-"} if 0 < offset < size else {}
        written = 0
        if offset < size or size == 0:
            with self.http.stream("GET", ticket["url"], headers=headers) as resp:
                if resp.status_code not in (200, 206):
                    resp.read()
                    error = (
                        resp.json().get("error", {})
                        if resp.headers.get("content-type") == "application/json"
                        else {}
                    )
                    raise ModelhubError(
                        error.get("code", f"HTTP_{resp.status_code}"), error.get("message", resp.text)
                    )
                if resp.status_code == 200:
                    offset = 0
                with part.open("r+b" if offset else "wb") as fh:
                    fh.seek(offset)
                    fh.truncate()
                    for chunk in resp.iter_raw(CHUNK):
                        fh.write(chunk)
                        written += len(chunk)
        if part.stat().st_size != size:
            raise ModelhubError(
                "INCOMPLETE", f"got {part.stat().st_size} of {size} bytes; run again to resume"
            )
        part.replace(dest)
        digest = hashlib.sha256()
        with dest.open("rb") as fh:
            while block := fh.read(CHUNK):
                digest.update(block)
        return DownloadResult(dest, written, offset, digest.hexdigest(), time.perf_counter() - started)
