"""The SDK's typed results, under their first import path: they live in `graphql_api.sdk.types`.

Like `graphql_api.client`, this imports no server module, so a client-only install (`pip install modelhub`)
has it.
"""

from __future__ import annotations

from .sdk.types import (
    Alias,
    DownloadResult,
    DownloadTicket,
    LatestVersion,
    Model,
    ModelTotals,
    ModelVersion,
    Page,
    RegisteredOperation,
    StatsRow,
)

__all__ = [
    "Alias",
    "DownloadResult",
    "DownloadTicket",
    "LatestVersion",
    "Model",
    "ModelTotals",
    "ModelVersion",
    "Page",
    "RegisteredOperation",
    "StatsRow",
]
