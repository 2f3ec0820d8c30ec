"""The long-lived objects one app instance shares across requests, built in the app lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from .config import Settings
from .metrics import Metrics
from .signing import Signer
from .storage import ObjectStore


@dataclass(frozen=True)
class Services:
    settings: Settings
    store: ObjectStore
    signer: Signer
    metrics: Metrics
