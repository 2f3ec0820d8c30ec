"""The per-request context: services, the caller's identity and per-request DataLoaders."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from starlette.requests import HTTPConnection
from starlette.responses import Response
from strawberry.dataloader import DataLoader
from strawberry.types import Info as StrawberryInfo

from .. import logs
from ..analytics.events import ModelDownloadTotals, model_download_totals, model_totals
from ..auth import Principal, require_principal
from ..db import models as models_db
from ..documents import ModelVersion, RegisteredModel
from ..downloads import Requester
from ..errors import DomainError
from ..http.caller import base_url, client_address, requester
from ..model_cache import ModelCache
from ..scope import Scope
from ..services import Services


async def _versions_by_id(ids: Sequence[Any]) -> list[ModelVersion | None]:
    found = await models_db.get_versions(list(ids))
    return [found.get(i) for i in ids]


async def _latest_versions(names: Sequence[str]) -> list[ModelVersion | None]:
    found = await models_db.latest_versions(list(names))
    return [found.get(n) for n in names]


@dataclass
class Context:
    request: HTTPConnection
    response: Response | None
    services: Services
    identity: Principal | None = None
    identity_error: DomainError | None = None
    # A WebSocket's `connection_init` payload (browsers cannot set headers on a WebSocket).
    connection_params: dict[str, object] | None = None
    # Set for query operations (by RequestGuards): their model reads may come from the model cache.
    cached_reads: bool = False
    # A WebSocket's credentials (its headers with `connection_init` over them), re-checked while it lives.
    credentials: dict[str, str] | None = None
    # What the caller may read (set with `identity`): every read takes it.
    scope: Scope = dataclasses.field(default_factory=Scope.nothing)
    # Root mutation field (response key) → its outcome and its result's project, for the audit trail (see
    # schema/audit.py).
    audit_outcomes: dict[str, tuple[str, str | None]] = dataclasses.field(default_factory=dict)

    def for_operation(self) -> Context:
        """A fresh context for one operation on a WebSocket, with the socket's caller as last checked:
        DataLoaders and per-operation flags are never shared between operations (or kept for the
        socket's lifetime), and there is no HTTP response to put headers on."""
        return dataclasses.replace(self, response=None, cached_reads=False, audit_outcomes={})

    @property
    def model_cache(self) -> ModelCache | None:
        """The model cache when this operation may read through it (queries), else None."""
        return self.services.models if self.cached_reads else None

    # DataLoaders are made on first use: most operations need none of them.
    @cached_property
    def version_totals(self) -> DataLoader[Any, ModelDownloadTotals]:
        return DataLoader(load_fn=model_download_totals)

    @cached_property
    def model_totals(self) -> DataLoader[str, ModelDownloadTotals]:
        return DataLoader(load_fn=model_totals)

    @cached_property
    def versions_by_id(self) -> DataLoader[Any, ModelVersion | None]:
        return DataLoader(load_fn=_versions_by_id)

    @cached_property
    def models_by_name(self) -> DataLoader[str, RegisteredModel]:
        cache = self.model_cache

        async def load(names: Sequence[str]) -> list[RegisteredModel]:
            found = await (cache.get_many(names) if cache is not None else models_db.find_models(list(names)))
            return [found[n] for n in names]

        return DataLoader(load_fn=load)

    @cached_property
    def latest_versions(self) -> DataLoader[str, ModelVersion | None]:
        return DataLoader(load_fn=_latest_versions)

    async def authenticate(self, headers: Mapping[str, str]) -> None:
        """Resolves the caller once; a failure is kept and raised where a principal is needed."""
        try:
            found = await self.services.auth.authenticate(headers)
            self.identity, self.scope = await self.services.projects.resolve(found)
            self.identity_error = None
            if self.identity is not None:
                logs.principal.set(self.identity.engineer)
                transport = "websocket" if self.request.scope.get("type") == "websocket" else "http"
                # An API token, else how the authenticator knows callers (header; oidc for JWTs).
                via = "token" if self.identity.token_id is not None else self.services.auth.mode
                self.services.audit.first_sign_in(
                    self.identity.engineer, client_address(self.request), transport, via
                )
        except DomainError as exc:
            self.identity, self.identity_error, self.scope = None, exc, Scope.nothing()

    @property
    def principal(self) -> Principal:
        """The caller; UNAUTHENTICATED (top-level) when there is none or it is invalid."""
        if self.identity_error is not None:
            raise self.identity_error
        return require_principal(self.identity)

    @property
    def requester(self) -> Requester:
        return requester(self.request, self.principal)

    @property
    def base_url(self) -> str:
        return base_url(self.request)


Info = StrawberryInfo[Context, None]
