"""`ModelhubClient`: the synchronous SDK client, which runs the flows of `flows` over httpx."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
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


class ModelhubClient:
    """Talks to one modelhub server. `engineer` is sent as X-Engineer-ID (header mode), `token` as a bearer
    token (token mode); both default to MODELHUB_ENGINEER / MODELHUB_TOKEN, the URL to MODELHUB_URL."""

    def __init__(
        self,
        base_url: str | None = None,
        engineer: str | None = None,
        timeout: float = 60.0,
        token: str | None = None,
    ) -> None:
        self.base_url = resolve_base_url(base_url)
        headers = client_headers(engineer, token)
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)
        # Ticket and presigned URLs carry their own authority: no bearer token goes to an object store.
        self.plain = httpx.Client(timeout=timeout, headers={"User-Agent": USER_AGENT})

    def __enter__(self) -> ModelhubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the client's connections (the `with` block does it)."""
        self.http.close()
        self.plain.close()

    def _run(self, flow: Flow[T]) -> T:
        """Runs a flow's steps; a step's failure is thrown into the flow, which may handle it."""
        driver = Driver(flow, self.base_url)
        for step in driver:
            try:
                driver.answer(self._step(step))
            except Exception as exc:
                driver.fail(exc)
        return driver.result

    def _step(self, step: Step) -> Any:
        if isinstance(step, Call):
            return self.graphql(step.query, step.variables)
        if isinstance(step, Blocking):
            return step.work()
        if isinstance(step, Put):
            body = file_slices(step.path, step.start, step.length, step.sent)
            resp = self.plain.put(step.url, content=body, headers=step.headers)
            if resp.status_code >= 300:
                raise http_error(resp)
            return resp.headers.get("etag")
        with self.plain.stream("GET", step.url, headers=step.headers) as resp:
            if resp.status_code not in (200, 206):
                resp.read()
                raise http_error(resp)
            step.sink.start(resp.status_code)
            try:
                for chunk in resp.iter_raw():
                    step.sink.write(chunk)
            finally:
                step.sink.close()
        return resp.status_code

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """Runs any GraphQL operation and returns its `data` (untyped); a top-level error is raised as the
        `ModelhubError` subclass of its code."""
        try:
            resp = self.http.post("/graphql", json={"query": query, "variables": variables or {}})
        except httpx.TransportError as exc:
            raise unreachable(self.base_url, exc) from exc
        return graphql_data(resp)

    def register(self, name: str, project: str, bucket: str, key: str, **optional: Any) -> ModelVersion:
        """Registers an artifact already in the store (optional: version, description, tags, metadata,
        sha256) and returns the new version."""
        return self._run(flows.register(name, project, bucket, key, optional))

    def push(
        self, path: Path, name: str, project: str, *, progress: Progress | None = None, **optional: Any
    ) -> ModelVersion:
        """Uploads a file as a new version (optional: version, description, tags, metadata, contentType)
        and returns it. The file's SHA-256 is declared, so the server refuses other bytes."""
        return self._run(flows.push(path, name, project, progress, optional))

    def models(self, **filter: Any) -> builtins.list[Model]:
        """Every model matching `filter` (a ModelFilter: names, namePrefix, projectNames, owners, tags...),
        following the pages."""
        return self._run(flows.models(filter))

    def models_page(self, first: int = 100, after: str | None = None, **filter: Any) -> Page[Model]:
        """One page of `first` models matching `filter`, after the cursor `after` (a previous page's
        `end_cursor`)."""
        return self._run(flows.models_page(first, after, filter))

    def info(self, name: str, version: int | None = None, alias: str | None = None) -> ModelVersion:
        """One version (the latest by default; `name` may be a NAME@VERSION or NAME@ALIAS ref) with its
        model's totals; NotFoundError when there is none."""
        return self._run(flows.info(name, version, alias))

    def register_operations(self, bodies: Sequence[str]) -> builtins.list[RegisteredOperation]:
        """Registers operation texts for persisted-operation mode (needs an ADMIN token)."""
        return self._run(flows.register_operations(bodies))

    def create_token(
        self,
        name: str,
        principal: str,
        role: str | None = "READER",
        grants: dict[str, str] | None = None,
        expires_in_days: int | None = None,
    ) -> dict[str, Any]:
        """Creates a token (ADMIN): {token, apiToken}; the token is shown this once. `role` is the global
        role (None: none), `grants` maps project -> READER, ENGINEER or MAINTAINER."""
        return self._run(flows.create_token(name, principal, role, grants, expires_in_days))

    def set_project_visibility(self, project: str, visibility: str) -> dict[str, Any]:
        """Makes a project INTERNAL or PRIVATE (its MAINTAINERs or an ADMIN)."""
        return self._run(flows.set_project_visibility(project, visibility))

    def grant_project_role(self, project: str, principal: str, role: str) -> dict[str, Any]:
        """Gives `principal` READER, ENGINEER or MAINTAINER in `project` (its MAINTAINERs or an ADMIN)."""
        return self._run(flows.grant_project_role(project, principal, role))

    def revoke_project_role(self, project: str, principal: str) -> dict[str, Any]:
        """Takes `principal`'s project-side role in `project` away."""
        return self._run(flows.revoke_project_role(project, principal))

    def grants(self, project: str | None = None) -> builtins.list[dict[str, Any]]:
        """The caller's own project roles, or (MAINTAINERs, ADMINs) a project's project-side grants."""
        return self._run(flows.grants(project))

    def stats(self, by: Sequence[str], interval: str | None = None, **filter: Any) -> builtins.list[StatsRow]:
        """downloadStats rows grouped `by` dimensions (MODEL, VERSION, PROJECT, ENGINEER, MODE, STATUS) per
        `interval` (HOUR, DAY, WEEK, MONTH), all pages; `filter` is a DownloadFilter (since, until...)."""
        return self._run(flows.stats(by, interval, filter))

    def request_download(
        self,
        name: str,
        version: int | None = None,
        mode: str = "STREAM",
        alias: str | None = None,
        resumes: str | None = None,
    ) -> DownloadTicket:
        """Asks for a download of a version (the latest by default) by `mode` STREAM or PRESIGNED and
        returns its ticket, without fetching it; `resumes` names an earlier download this one continues."""
        return self._run(flows.request_download(name, version, mode, alias, resumes))

    def download(
        self,
        name: str,
        dest: Path,
        version: int | None = None,
        *,
        alias: str | None = None,
        presigned: bool = False,
        progress: Progress | None = None,
    ) -> DownloadResult:
        """Downloads to `dest` through `<dest>.part`, resuming what is there; verified, then renamed.
        `name` may be a NAME@VERSION or NAME@ALIAS ref."""
        return self._run(flows.download(name, dest, version, alias, presigned, progress))

    # `client.list(projectNames=[...])`; so `list` in this class is this method, and the annotations say
    # `builtins.list` (documentation tools evaluate them in the class's namespace).
    list = models
