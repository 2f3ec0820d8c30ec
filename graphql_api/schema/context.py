"""The per-request context: services, the caller's identity and per-request DataLoaders."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.requests import HTTPConnection
from starlette.responses import Response
from strawberry.dataloader import DataLoader
from strawberry.types import Info as StrawberryInfo

from ..analytics.events import ModelDownloadTotals, model_download_totals
from ..downloads import Requester
from ..http.caller import base_url, requester
from ..services import Services


@dataclass
class Context:
    request: HTTPConnection
    response: Response | None
    services: Services
    download_totals: DataLoader[Any, ModelDownloadTotals] = field(init=False)

    def __post_init__(self) -> None:
        self.download_totals = DataLoader(load_fn=model_download_totals)

    @property
    def requester(self) -> Requester:
        """The caller; a bad identity raises Unauthenticated, a top-level UNAUTHENTICATED error."""
        return requester(self.request)

    @property
    def engineer(self) -> str:
        return self.requester.engineer

    @property
    def base_url(self) -> str:
        return base_url(self.request)


Info = StrawberryInfo[Context, None]
