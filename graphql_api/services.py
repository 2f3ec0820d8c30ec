"""The long-lived objects one app instance shares across requests, built in the app lifespan."""

from __future__ import annotations

from dataclasses import dataclass, field

from .analytics.feed import Hub
from .analytics.volume import EventVolume
from .audit import AuditLog
from .auth import Authenticator
from .config import Settings
from .db.events import EventWrites
from .limits import CostBudget, OpenSockets, RateLimiter, ScanSlots
from .metrics import Metrics
from .model_cache import ModelCache
from .operations import Registry
from .scope import ProjectDirectory
from .signing import Signer
from .storage import ObjectStore, StorageScope


@dataclass(frozen=True)
class Services:
    settings: Settings
    store: ObjectStore
    signer: Signer
    metrics: Metrics
    auth: Authenticator
    scope: StorageScope
    limiter: RateLimiter
    budget: CostBudget
    scans: ScanSlots
    persisted: Registry
    models: ModelCache
    feed: Hub
    projects: ProjectDirectory
    audit: AuditLog
    volume: EventVolume
    events: EventWrites
    sockets: OpenSockets
    # The uploads whose bytes a PUT is receiving on this instance now (local store): one at a time each.
    receiving: set[str] = field(default_factory=set)
