"""`AsyncModelhubClient`: the SDK client for asyncio code, which awaits each step of the same flows."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx

from . import flows
from .errors import unreachable
from .files import Progress, file_slices
from .transport import (
    USER_AGENT,
    Blocking,
    Call,
    Driver,
    Flow,
    Put,
    Step,
    client_headers,
    graphql_data,
    http_error,
    resolve_base_url,
)
from .types import DownloadResult, DownloadTicket, Model, ModelVersion, Page, RegisteredOperation, StatsRow

T = TypeVar("T")


class AsyncModelhubClient:
    """`ModelhubClient` for asyncio code (notebooks, services): the same methods, awaited."""

    def __init__(
        self,
        base_url: str | None = None,
        engineer: str | None = None,
        timeout: float = 60.0,
        token: str | None = None,
    ) -> None:
        self.base_url = resolve_base_url(base_url)
        headers = client_headers(engineer, token)
        self.http = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=timeout)
        self.plain = httpx.AsyncClient(timeout=timeout, headers={"User-Agent": USER_AGENT})

    async def __aenter__(self) -> AsyncModelhubClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Closes the client's connections (the `async with` block does it)."""
        await self.http.aclose()
        await self.plain.aclose()

    async def _run(self, flow: Flow[T]) -> T:
        """`ModelhubClient._run`, each step awaited."""
        driver = Driver(flow, self.base_url)
        for step in driver:
            try:
                driver.answer(await self._step(step))
            except Exception as exc:
                driver.fail(exc)
        return driver.result

    async def _step(self, step: Step) -> Any:
        if isinstance(step, Call):
            return await self.graphql(step.query, step.variables)
        if isinstance(step, Blocking):
            return await asyncio.to_thread(step.work)
        if isinstance(step, Put):

            async def body() -> AsyncIterator[bytes]:
                for block in file_slices(step.path, step.start, step.length, step.sent):
                    yield block

            resp = await self.plain.put(step.url, content=body(), headers=step.headers)
            if resp.status_code >= 300:
                raise http_error(resp)
            return resp.headers.get("etag")
        async with self.plain.stream("GET", step.url, headers=step.headers) as resp:
            if resp.status_code not in (200, 206):
                await resp.aread()
                raise http_error(resp)
            step.sink.start(resp.status_code)
            try:
                async for chunk in resp.aiter_raw():
                    step.sink.write(chunk)
            finally:
                step.sink.close()
        return resp.status_code

    async def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """`ModelhubClient.graphql`, awaited."""
        try:
            resp = await self.http.post("/graphql", json={"query": query, "variables": variables or {}})
        except httpx.TransportError as exc:
            raise unreachable(self.base_url, exc) from exc
        return graphql_data(resp)

    async def register(self, name: str, project: str, bucket: str, key: str, **optional: Any) -> ModelVersion:
        """`ModelhubClient.register`, awaited."""
        return await self._run(flows.register(name, project, bucket, key, optional))

    async def push(
        self, path: Path, name: str, project: str, *, progress: Progress | None = None, **optional: Any
    ) -> ModelVersion:
        """`ModelhubClient.push`, awaited (the file is hashed off the event loop)."""
        return await self._run(flows.push(path, name, project, progress, optional))

    async def models(self, **filter: Any) -> builtins.list[Model]:
        """`ModelhubClient.models`, awaited."""
        return await self._run(flows.models(filter))

    async def models_page(self, first: int = 100, after: str | None = None, **filter: Any) -> Page[Model]:
        """`ModelhubClient.models_page`, awaited."""
        return await self._run(flows.models_page(first, after, filter))

    async def info(self, name: str, version: int | None = None, alias: str | None = None) -> ModelVersion:
        """`ModelhubClient.info`, awaited."""
        return await self._run(flows.info(name, version, alias))

    async def register_operations(self, bodies: Sequence[str]) -> builtins.list[RegisteredOperation]:
        """`ModelhubClient.register_operations`, awaited."""
        return await self._run(flows.register_operations(bodies))

    async def stats(
        self, by: Sequence[str], interval: str | None = None, **filter: Any
    ) -> builtins.list[StatsRow]:
        """`ModelhubClient.stats`, awaited."""
        return await self._run(flows.stats(by, interval, filter))

    async def create_token(
        self,
        name: str,
        principal: str,
        role: str | None = "READER",
        grants: dict[str, str] | None = None,
        expires_in_days: int | None = None,
    ) -> dict[str, Any]:
        """`ModelhubClient.create_token`, awaited."""
        return await self._run(flows.create_token(name, principal, role, grants, expires_in_days))

    async def set_project_visibility(self, project: str, visibility: str) -> dict[str, Any]:
        """`ModelhubClient.set_project_visibility`, awaited."""
        return await self._run(flows.set_project_visibility(project, visibility))

    async def grant_project_role(self, project: str, principal: str, role: str) -> dict[str, Any]:
        """`ModelhubClient.grant_project_role`, awaited."""
        return await self._run(flows.grant_project_role(project, principal, role))

    async def revoke_project_role(self, project: str, principal: str) -> dict[str, Any]:
        """`ModelhubClient.revoke_project_role`, awaited."""
        return await self._run(flows.revoke_project_role(project, principal))

    async def grants(self, project: str | None = None) -> builtins.list[dict[str, Any]]:
        """`ModelhubClient.grants`, awaited."""
        return await self._run(flows.grants(project))

    async def request_download(
        self,
        name: str,
        version: int | None = None,
        mode: str = "STREAM",
        alias: str | None = None,
        resumes: str | None = None,
    ) -> DownloadTicket:
        """`ModelhubClient.request_download`, awaited."""
        return await self._run(flows.request_download(name, version, mode, alias, resumes))

    async def download(
        self,
        name: str,
        dest: Path,
        version: int | None = None,
        *,
        alias: str | None = None,
        presigned: bool = False,
        progress: Progress | None = None,
    ) -> DownloadResult:
        """`ModelhubClient.download`, awaited."""
        return await self._run(flows.download(name, dest, version, alias, presigned, progress))

    list = models
