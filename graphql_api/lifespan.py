"""The app's lifespan: the database, the object store, the services and the background tasks, opened in
order at start and closed in reverse at shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import pymongo
from prometheus_client.multiprocess import mark_process_dead
from pymongo import AsyncMongoClient
from starlette.applications import Starlette

from . import checksums, download_outcomes, oidc, operations, uploads
from .analytics import feed, feed_items
from .analytics.roller import Roller, fill_totals
from .analytics.volume import EventVolume
from .audit import AuditLog
from .auth import Authenticator, bootstrap_admin
from .config import Settings
from .db import audit as audit_db
from .db import connect
from .db import engineers as engineers_db
from .db import events as events_db
from .db import work as db_work
from .db.events import EventWrites
from .delivery import Deliverer
from .health import Health, Watch, pause
from .http.graphql_view import ModelhubGraphQL
from .limits import CostBudget, OpenSockets, RateLimiter, ScanSlots, scan_total
from .metrics import Metrics, multiprocess_dir, reap_dead_workers
from .model_cache import ModelCache
from .oidc import GroupGrants
from .scope import ProjectDirectory
from .services import Services
from .signing import Signer
from .storage import ObjectStore
from .storage.guarded import GuardedStore
from .storage.local import LocalObjectStore
from .storage.s3 import S3ObjectStore
from .storage.traced import TracedStore
from .tracing import Tracing

log = logging.getLogger("modelhub")
# The discovery document and the JWKS are small; a provider slower than this fails the sign-in at hand.
OIDC_FETCH_TIMEOUT = 5.0


@dataclass(frozen=True)
class Connection:
    """What the lifespan's connection half holds for its serving half: the database client, the signer and
    the object store (guarded, and traced when tracing is on)."""

    client: AsyncMongoClient[Any]
    signer: Signer
    store: ObjectStore


class Lifespan:
    """The lifespan of an app of `settings` (`grants`: OIDC's group grants when it signs in that way) whose
    GraphQL endpoint is `graphql_app`, registering the `shipped` operations. In two halves: `connection`
    (the database, the object store, the health watches) and `serving` on it (the services requests share
    and the background tasks); a test module shares one connection and serves anew for each test."""

    def __init__(
        self,
        settings: Settings,
        grants: GroupGrants | None,
        graphql_app: ModelhubGraphQL,
        shipped: list[tuple[str | None, str]],
    ) -> None:
        self.settings = settings
        self.grants = grants
        self.graphql_app = graphql_app
        self.shipped = shipped

    @contextlib.asynccontextmanager
    async def __call__(self, app: Starlette) -> AsyncIterator[None]:
        async with self.connection(app) as connected, self.serving(app, connected):
            yield

    @contextlib.asynccontextmanager
    async def connection(self, app: Starlette) -> AsyncIterator[Connection]:
        """The outer half: the database (migrated, Beanie initialised), the object store and the health
        watches on both."""
        settings = self.settings
        async with AsyncExitStack() as stack:
            client, probe_client, tracing = await _connect(app, settings, stack)
            # Migration 7, before any roller of this process folds or any request reads the totals.
            await fill_totals(settings.rollup_lag_seconds, settings.rollup_lease_seconds)
            signer = Signer(settings.resolved_signing_secret())
            store = await _store(app, settings, signer, probe_client, tracing, stack)
            yield Connection(client=client, signer=signer, store=store)

    @contextlib.asynccontextmanager
    async def serving(self, app: Starlette, connected: Connection) -> AsyncIterator[None]:
        """The inner half, on a connection: the services requests share (caches, limits, metrics, the audit
        queue, group commit) and the background tasks; on exit the tasks stop and pending writes land."""
        settings, graphql_app = self.settings, self.graphql_app
        # What this process read of the engineer numbers is read again (the database may have been emptied
        # between two servings on one connection, as tests do).
        engineers_db.forget(connected.client)
        async with AsyncExitStack() as stack:
            stack.push_async_callback(db_work.drain, 5.0)  # raw-scan pieces of this serving's requests
            metrics = Metrics(
                operation_allowlist=settings.metrics_operation_allowlist,
                model_allowlist=settings.metrics_model_allowlist,
            )
            auth = await _authenticator(settings, self.grants, stack)
            registry = operations.Registry(metrics, operations.PersistedMode(settings.persisted_operations))
            await registry.load()
            for _, body in self.shipped:
                registry.ship(body)
            graphql_app.persisted = registry
            stack.callback(setattr, graphql_app, "persisted", None)
            app.state.services = await _services(
                settings, stack, connected.store, connected.signer, metrics, auth, registry
            )
            await app.state.services.volume.refresh()  # raw scans are priced by their events from the start
            if auth.mode != "header" and (token := await bootstrap_admin()):
                # Printed once, on the first start with no token at all; only its hash is kept.
                log.warning("created the first ADMIN token (shown once, keep it): %s", token)
            await _start_background(settings, stack, app.state.services)
            multiproc = multiprocess_dir()
            if multiproc:
                reap_dead_workers(multiproc)  # a worker that crashed left its live gauges behind
                stack.callback(mark_process_dead, os.getpid(), multiproc)
            yield


async def _connect(
    app: Starlette, settings: Settings, stack: AsyncExitStack
) -> tuple[AsyncMongoClient[Any], AsyncMongoClient[Any], Tracing | None]:
    """The app's database client, the health probe's own client and tracing (when OTEL_* says so)."""
    mongo_uri = settings.mongo_uri
    assert mongo_uri is not None  # create_app refuses settings without one
    bounds: dict[str, Any] = {
        "serverSelectionTimeoutMS": int(settings.mongo_server_selection_timeout_seconds * 1000),
        "connectTimeoutMS": int(settings.mongo_connect_timeout_seconds * 1000),
    }
    # The health probe's own client (one connection, no listeners): a pool taken by requests cannot
    # starve it, so the database is marked down when it stops answering, not when it is busy.
    probe_client: AsyncMongoClient[Any] = AsyncMongoClient(mongo_uri, maxPoolSize=1, **bounds)
    stack.push_async_callback(probe_client.close)
    # Traces when OTEL_* says so (the otel extra); exported and stopped after everything else.
    app.state.tracing = tracing = Tracing.from_env()
    if tracing is not None:
        stack.push_async_callback(asyncio.to_thread, tracing.shutdown)
        stack.callback(setattr, app.state, "tracing", None)
        bounds["event_listeners"] = [tracing.mongo_listener()]
    bounds["maxPoolSize"] = settings.mongo_max_pool_size
    client = await stack.enter_async_context(connect(mongo_uri, settings.mongo_db, **bounds))
    stack.push_async_callback(db_work.drain, 5.0)  # raw-scan pieces still on the database
    return client, probe_client, tracing


async def _store(
    app: Starlette,
    settings: Settings,
    signer: Signer,
    probe_client: AsyncMongoClient[Any],
    tracing: Tracing | None,
    stack: AsyncExitStack,
) -> ObjectStore:
    """The object store, guarded by its health watch (and traced), with the health watches running."""
    raw_store = await _open_store(settings, signer, stack)
    health = _watches(settings, probe_client, raw_store)
    store: ObjectStore = GuardedStore(raw_store, health.store, settings.store_timeout_seconds)
    if tracing is not None:
        store = TracedStore(store, tracing)
    app.state.health = health
    for watch in health.all():
        stack.push_async_callback(_stop, asyncio.create_task(watch.run()), watch.stop)
    return store


async def _authenticator(
    settings: Settings, grants: GroupGrants | None, stack: AsyncExitStack
) -> Authenticator:
    auth = Authenticator(settings.auth or "token", settings.token_cache_seconds, settings.token_touch_seconds)
    stack.push_async_callback(auth.drain, 5.0)  # lastUsedAt writes still pending
    if grants is not None:
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=OIDC_FETCH_TIMEOUT))
        auth.oidc = oidc.verifier(settings, grants, http)
    return auth


async def _services(
    settings: Settings,
    stack: AsyncExitStack,
    store: ObjectStore,
    signer: Signer,
    metrics: Metrics,
    auth: Authenticator,
    registry: operations.Registry,
) -> Services:
    """The per-app objects, with the model cache, the live feed and the audit writer running."""
    model_cache = ModelCache(metrics, settings.model_cache_entries, settings.model_cache_seconds)
    stack.push_async_callback(_stop, asyncio.create_task(model_cache.run()))
    feed_hub = feed.Hub(
        settings.feed_buffer_events,
        feed_items.FeedLimits(
            per_principal=settings.feed_max_subscriptions_per_principal,
            per_instance=settings.feed_max_subscriptions,
            catching_up=settings.feed_max_catching_up,
            catching_up_per_principal=min(
                settings.feed_max_catching_up_per_principal, settings.feed_max_catching_up
            ),
        ),
        metrics,
    )
    stack.push_async_callback(feed_hub.close)
    # Retention: TTL indexes made (or their expiry changed) to match the settings.
    await events_db.ensure_retention(settings.event_retention_days)
    await audit_db.ensure_retention(settings.audit_retention_days)
    audit_log = AuditLog(metrics, settings.audit_queue_records, settings.audit_retention_days)
    stack.push_async_callback(audit_log.close, asyncio.create_task(audit_log.run()))
    return Services(
        settings=settings,
        store=store,
        signer=signer,
        metrics=metrics,
        auth=auth,
        scope=settings.storage_scope,
        limiter=RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst),
        budget=CostBudget(
            settings.cost_budget, settings.anonymous_cost_budget, settings.cost_budget_window_seconds
        ),
        scans=ScanSlots(
            settings.raw_scans_per_principal,
            scan_total(settings.raw_scans_total, settings.mongo_max_pool_size),
            settings.raw_scan_piece_seconds,
        ),
        persisted=registry,
        models=model_cache,
        feed=feed_hub,
        projects=ProjectDirectory(settings.token_cache_seconds, header_mode=auth.mode == "header"),
        audit=audit_log,
        volume=EventVolume(),
        events=EventWrites(lambda write, size: metrics.event_write_batch.labels(write).observe(size)),
        sockets=OpenSockets(settings.max_sockets_per_principal),
    )


async def _start_background(settings: Settings, stack: AsyncExitStack, services: Services) -> None:
    """The event volume, the sweeper, the checksum verifier, the roller and the webhook deliverer, each
    stopped (asked, then cancelled) before the clients it uses close."""
    sweep_stopped = asyncio.Event()
    volume = services.volume.run(sweep_stopped)
    stack.push_async_callback(_stop, asyncio.create_task(volume), sweep_stopped.set)
    sweeper = _sweep_until(sweep_stopped, services, settings.stale_download_seconds)
    stack.push_async_callback(_stop, asyncio.create_task(sweeper), sweep_stopped.set)
    verify_stopped = asyncio.Event()
    verifier = _verify_until(
        verify_stopped, services.store, settings.checksum_interval_seconds, settings.checksum_concurrency
    )
    stack.push_async_callback(_stop, asyncio.create_task(verifier), verify_stopped.set)
    roll_stopped = asyncio.Event()
    roller = Roller(
        services.metrics,
        settings.rollup_interval_seconds,
        settings.rollup_lag_seconds,
        settings.rollup_lease_seconds,
    )
    stack.push_async_callback(_stop, asyncio.create_task(roller.run(roll_stopped)), roll_stopped.set)
    deliver_stopped = asyncio.Event()
    deliverer = Deliverer(settings, services.metrics)
    await deliverer.prepare()
    stack.push_async_callback(_stop, asyncio.create_task(deliverer.run(deliver_stopped)), deliver_stopped.set)


def _watches(settings: Settings, client: Any, store: ObjectStore) -> Health:
    async def ping_database() -> None:
        # Bounded by the driver itself (it closes the connection cleanly), inside the watch's own bound.
        with pymongo.timeout(settings.health_probe_timeout_seconds * 0.9):
            await client.admin.command("ping")

    def watch(name: str, probe: Any) -> Watch:
        return Watch(
            name,
            probe,
            interval=settings.health_interval_seconds,
            timeout=settings.health_probe_timeout_seconds,
            failures=settings.health_failures,
        )

    return Health(watch("the database", ping_database), watch("the object store", store.ping))


async def _open_store(settings: Settings, signer: Signer, stack: AsyncExitStack) -> ObjectStore:
    if settings.storage_backend == "s3":
        return await S3ObjectStore.open(settings, stack)
    return LocalObjectStore(settings.objects_dir, signer, settings.stream_chunk_bytes)


async def open_store(settings: Settings, stack: AsyncExitStack) -> ObjectStore:
    """The configured object store, for a command that works on it outside the app (`modelhub prune`)."""
    return await _open_store(settings, Signer(settings.resolved_signing_secret()), stack)


async def _sweep_until(stopped: asyncio.Event, services: Services, stale_seconds: float) -> None:
    """Sweeps stale IN_PROGRESS downloads and abandoned uploads at start-up, then every half staleness
    period, until stopped."""
    while not stopped.is_set():
        try:
            await download_outcomes.sweep_stale(services, stale_seconds)
            await uploads.expire_abandoned(services)
        except Exception:  # a failed sweep is retried next period; it must not kill the app
            log.exception("sweeping stale downloads and uploads failed")
        await pause(stopped, max(stale_seconds / 2, 1.0))


async def _verify_until(stopped: asyncio.Event, store: ObjectStore, seconds: float, concurrency: int) -> None:
    """Hashes the artifacts of PENDING versions (registered where the store holds no full SHA-256)."""
    while not stopped.is_set():
        try:
            await checksums.verify_pending(store, concurrency=concurrency)
        except Exception:  # retried next period; it must not kill the app
            log.exception("verifying artifact checksums failed")
        await pause(stopped, seconds)


async def _stop(task: asyncio.Task[Any], ask: Callable[[], None] | None = None) -> None:
    """Stops a background task before the clients it uses close: asked to (`ask`) and given 5 s, else
    cancelled and given 5 s more; shutdown never hangs on a stuck task."""
    if ask is not None:
        ask()
        if (await asyncio.wait({task}, timeout=5))[0]:
            return
    task.cancel()
    if not (await asyncio.wait({task}, timeout=5))[0]:
        log.error("a background task did not stop within 5 s of being cancelled")
