"""Webhook delivery: the dispatcher turns recorded changes into outbox rows, the sender POSTs them signed,
with leases, retries with backoff, per-webhook and overall concurrency bounds, and SSRF checks per attempt.

Ordering: registry events (versions, aliases, checksums) of one webhook about one model are sent one at a time
in the order the database recorded them (the change stream's order); a later one waits until the earlier is
delivered or given up. Download outcomes are not ordered among themselves (see `webhooks.key_of`). Different
models, and different webhooks, proceed independently."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import socket
import ssl
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from beanie import PydanticObjectId
from pymongo.errors import OperationFailure

from . import webhooks
from .config import Settings
from .db import models as models_db
from .db import outbox as outbox_db
from .db import webhooks as webhooks_db
from .documents import AliasChange, DeliveryStatus, Webhook, WebhookDelivery, utcnow
from .health import pause, unless_stopped
from .metrics import Metrics
from .webhook_post import MAX_ERROR_CHARS, backoff, send

log = logging.getLogger("modelhub.webhooks")

CURSOR = "webhooks"
# A dispatcher that died (SIGKILL) holds the stream for at most this long; a live one renews every third.
CURSOR_LEASE = timedelta(seconds=10)
# Pending deliveries of one webhook read per pass: the heads of up to this many models' queues.
PENDING_READ = 200
# How often the sender reads the outbox: at least this often, and not more often than the minimum even while
# the dispatcher writes new rows.
REREAD_SECONDS = 1.0
REREAD_MIN_SECONDS = 0.25
# MongoDB's ChangeStreamFatalError and ChangeStreamHistoryLost.
HISTORY_LOST = (280, 286)
SAVE_EVERY_SECONDS = 1.0


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@functools.cache
def _tls() -> ssl.SSLContext:
    """httpx's default TLS context (certifi's CAs; nothing from the environment), made once per process:
    loading the CAs takes about 0.1 s, which every Deliverer (every app start) paid."""
    return httpx.create_ssl_context(trust_env=False)


class Deliverer:
    """One instance's dispatcher and sender; `run` until `stopped`."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.wake = asyncio.Event()
        self.in_flight: dict[str, asyncio.Task[None]] = {}
        self.per_webhook: Counter[PydanticObjectId] = Counter()
        self.backlog_read_at = 0.0
        # The sender's view of the outbox: enabled webhooks and their oldest PENDING rows, read at `read_at`.
        self.hooks: list[Webhook] = []
        self.rows: dict[PydanticObjectId, list[outbox_db.Pending]] = {}
        self.read_at = -REREAD_SECONDS
        self.new_rows = False
        self.orphans_dropped_at = 0.0
        self.client = httpx.AsyncClient(
            follow_redirects=False,
            trust_env=False,  # no proxy from the environment: the checked address is the one connected to
            verify=_tls(),
            timeout=httpx.Timeout(
                settings.webhook_timeout_seconds, connect=settings.webhook_connect_timeout_seconds
            ),
            limits=httpx.Limits(max_connections=settings.webhook_concurrency, max_keepalive_connections=8),
        )

    async def prepare(self) -> None:
        """Before the app serves: on a database where no dispatcher has stored a position yet, store "now",
        so that the events of the first requests are read even if the dispatcher opens its stream later."""
        try:
            if (await outbox_db.cursor(CURSOR)).token is not None:
                return
            now = utcnow()
            taken = await outbox_db.take_cursor(CURSOR, self.holder, now, now + CURSOR_LEASE)
            if taken is None or taken.token is not None:  # another instance reads (or has read) the stream
                return
            async with outbox_db.Changes(outbox_db.database(), None) as changes:
                await outbox_db.save_cursor(
                    CURSOR, self.holder, changes.position, taken.seq, now + CURSOR_LEASE
                )
        except Exception:  # the dispatcher stores a position when it starts reading
            log.exception("storing the first webhook stream position failed")

    async def run(self, stopped: asyncio.Event) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._dispatch_until(stopped))
                group.create_task(self._send_until(stopped))
                await stopped.wait()
                self.wake.set()
        finally:
            for task in list(self.in_flight.values()):
                task.cancel()  # its lease lapses and another worker (or this one, restarted) sends it again
            await asyncio.gather(*self.in_flight.values(), return_exceptions=True)
            await self.client.aclose()

    # ---- dispatcher: change stream -> outbox ----

    async def _dispatch_until(self, stopped: asyncio.Event) -> None:
        while not stopped.is_set():
            try:
                now = utcnow()
                cursor = await outbox_db.take_cursor(CURSOR, self.holder, now, now + CURSOR_LEASE)
                if cursor is None:  # another instance reads the stream; stand by
                    await pause(stopped, CURSOR_LEASE.total_seconds() / 3)
                    continue
                try:
                    await self._follow(cursor.token, cursor.seq, stopped)
                except OperationFailure as exc:
                    if exc.code not in HISTORY_LOST:
                        raise
                    # The stored position fell out of the change history (a replica set's oplog window):
                    # the events in between cannot be read any more. Said loudly; reading goes on from now.
                    log.error("webhook events were lost: the stored stream position is too old (%s)", exc)
                    await outbox_db.save_cursor(
                        CURSOR, self.holder, None, cursor.seq, utcnow() + CURSOR_LEASE
                    )
            except Exception:
                log.exception("the webhook dispatcher failed; it starts again from its stored position")
                await pause(stopped, 1.0)
        with contextlib.suppress(Exception):
            await outbox_db.release_cursor(CURSOR, self.holder)

    async def _follow(self, token: dict[str, Any] | None, seq: int, stopped: asyncio.Event) -> None:
        hooks: list[Webhook] = []
        projects: dict[str, str] = {}
        async with outbox_db.Changes(outbox_db.database(), token) as changes:
            saved_at = -SAVE_EVERY_SECONDS
            dirty = token is None  # from now: store where "now" is at once, so a restart misses nothing
            while not stopped.is_set():
                change, stopping = await unless_stopped(changes.next(), stopped)
                if stopping:
                    break
                if changes.webhooks_changed:
                    changes.webhooks_changed = False
                    hooks = await webhooks_db.all_webhooks()
                if change is not None:
                    seq += 1
                    dirty = True
                    project = webhooks.project_of(change.document)
                    if project is None and isinstance(change.document, AliasChange):
                        project = await self._project(projects, change.document.model_name)
                    rows = webhooks.deliveries_for(change, seq, hooks, project or "")
                    if rows:
                        await outbox_db.insert_deliveries(rows)
                        self.new_rows = True
                        self.wake.set()
                if dirty and (change is None or time.monotonic() - saved_at >= SAVE_EVERY_SECONDS):
                    until = utcnow() + CURSOR_LEASE
                    if not await outbox_db.save_cursor(CURSOR, self.holder, changes.position, seq, until):
                        log.warning("the webhook dispatcher lost its lease; standing by")
                        return
                    saved_at, dirty = time.monotonic(), False
                elif time.monotonic() - saved_at >= CURSOR_LEASE.total_seconds() / 3:
                    until = utcnow() + CURSOR_LEASE
                    if not await outbox_db.save_cursor(CURSOR, self.holder, changes.position, seq, until):
                        return
                    saved_at = time.monotonic()

    @staticmethod
    async def _project(cache: dict[str, str], model_name: str) -> str:
        if model_name not in cache:
            model = await models_db.find_model(model_name)
            cache[model_name] = model.project_name if model else ""
        return cache[model_name]

    # ---- sender: outbox -> receivers ----

    async def _send_until(self, stopped: asyncio.Event) -> None:
        while not stopped.is_set():
            self.wake.clear()
            try:
                await self._send_due()
                await self._observe_backlog()
            except Exception:
                log.exception("the webhook sender failed a pass; it tries again")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.webhook_poll_seconds):
                    await self.wake.wait()  # set by new deliveries, finished attempts, and stopping

    async def _observe_backlog(self) -> None:
        if time.monotonic() - self.backlog_read_at < 5.0:
            return
        self.backlog_read_at = time.monotonic()
        if time.monotonic() - self.orphans_dropped_at >= 60.0:
            self.orphans_dropped_at = time.monotonic()
            await outbox_db.drop_orphans([webhooks.ident(h) for h in await webhooks_db.all_webhooks()])
        depth, oldest = await outbox_db.backlog()
        self.metrics.webhook_outbox_depth.set(depth)
        age = (utcnow() - oldest).total_seconds() if oldest else 0.0
        self.metrics.webhook_outbox_oldest_age.set(max(0.0, age))

    async def _send_due(self) -> None:
        """Starts what is due. The outbox is read at most every REREAD_SECONDS (sooner, but at most every
        REREAD_MIN_SECONDS, when the dispatcher wrote new rows); in between, a finished attempt starts the
        next one from the rows read, kept up to date by this worker's own outcomes. The lease's
        compare-and-set, not this view, decides who sends: a stale view can only wait, never double send.
        (SecantusDB reads a whole index range before applying a limit: reading the outbox after every
        attempt slowed the API while a backlog drained.)"""
        if len(self.in_flight) >= self.settings.webhook_concurrency:
            return
        age = time.monotonic() - self.read_at
        if age >= REREAD_SECONDS or (self.new_rows and age >= REREAD_MIN_SECONDS):
            self.new_rows = False
            self.read_at = time.monotonic()
            self.hooks, self.rows = [], {}
            if await outbox_db.any_pending():
                self.hooks = [h for h in await webhooks_db.all_webhooks() if h.enabled]
                for hook in self.hooks:
                    self.rows[webhooks.ident(hook)] = await outbox_db.pending(
                        webhooks.ident(hook), PENDING_READ
                    )
        hooks = list(self.hooks)
        random.shuffle(hooks)  # when the overall bound is reached, no webhook always comes last
        for hook in hooks:
            if not await self._send_due_of(hook):
                return

    async def _send_due_of(self, hook: Webhook) -> bool:
        """Leases and starts the due deliveries of one webhook, heads of their key's queue only, within the
        bounds; False once the overall bound is reached."""
        settings = self.settings
        webhook_id = webhooks.ident(hook)
        if self.per_webhook[webhook_id] >= settings.webhook_concurrency_per_webhook:
            return True
        now = utcnow()
        heads: set[str] = set()
        for row in self.rows.get(webhook_id, []):
            if row.key in heads:  # an earlier delivery with this key is not done yet
                continue
            heads.add(row.key)
            if (
                row.id in self.in_flight or row.next_attempt_at > now
                or (row.lease_until is not None and row.lease_until > now)
            ):  # fmt: skip
                continue
            until = now + timedelta(seconds=settings.webhook_timeout_seconds + 30)
            until = until.replace(microsecond=until.microsecond // 1000 * 1000)
            delivery = await outbox_db.lease(row.id, row.lease_until, until)
            if delivery is None:  # another worker took it (or it is done): wait for the next read
                row.lease_until = until
                continue
            row.lease_until = until
            self.per_webhook[webhook_id] += 1
            self.in_flight[row.id] = asyncio.create_task(self._attempt(delivery, hook, until, row))
            if len(self.in_flight) >= settings.webhook_concurrency:
                return False
            if self.per_webhook[webhook_id] >= settings.webhook_concurrency_per_webhook:
                return True
        return True

    async def _attempt(
        self, delivery: WebhookDelivery, hook: Webhook, until: datetime, row: outbox_db.Pending
    ) -> None:
        try:
            retry_at = await self._attempt_once(delivery, hook, until)
            rows = self.rows.get(delivery.webhook_id, [])
            if retry_at is None:  # delivered or given up: the next with its key is the head now
                with contextlib.suppress(ValueError):
                    rows.remove(row)
            else:
                row.next_attempt_at, row.lease_until = retry_at, None
        except Exception:
            log.exception("recording a webhook delivery attempt failed (the lease lapses and it is retried)")
        finally:
            self.in_flight.pop(delivery.id, None)
            self.per_webhook[delivery.webhook_id] -= 1
            self.wake.set()

    async def _attempt_once(
        self, delivery: WebhookDelivery, hook: Webhook, until: datetime
    ) -> datetime | None:
        """One attempt and its bookkeeping: when to try again, or None when delivered or given up."""
        settings = self.settings
        now = utcnow()
        started = time.monotonic()
        status, wait, error = await send(self.client, settings, hook, delivery, now)
        seconds = time.monotonic() - started
        event_label = (
            delivery.event_type if delivery.event_type in self.metrics.webhook_event_types else "TEST"
        )
        self.metrics.webhook_delivery_seconds.labels(event_label).observe(seconds)
        attempts = delivery.attempts + 1
        first = _utc(delivery.first_attempt_at) if delivery.first_attempt_at else now
        fields: dict[str, Any] = {
            "attempts": attempts, "last_status_code": status, "last_error": error, "last_attempt_at": now,
            "first_attempt_at": first,
        }  # fmt: skip
        webhook_id = webhooks.ident(hook)
        if error is None:
            fields.update(status=DeliveryStatus.DELIVERED.value, finished_at=utcnow())
            await outbox_db.finish(delivery.id, until, fields)
            if hook.failing_since is not None or delivery.attempts:  # a run of failures may be ending
                await webhooks_db.record_success(webhook_id)
            self.metrics.webhook_deliveries.labels("delivered", event_label).inc()
            return None
        window = timedelta(seconds=settings.webhook_retry_seconds)
        created = _utc(delivery.created_at)
        if now - created >= window:
            fields.update(status=DeliveryStatus.FAILED.value, finished_at=utcnow())
            fields["last_error"] = f"given up after {attempts} attempts: {error}"
            outcome = "failed"
        else:
            delay = backoff(
                attempts, settings.webhook_backoff_initial_seconds, settings.webhook_backoff_max_seconds
            )
            if wait is not None:
                delay = max(delay, wait)
            fields["next_attempt_at"] = min(now + timedelta(seconds=delay), created + window)
            outcome = "retried"
        await outbox_db.finish(delivery.id, until, fields)
        self.metrics.webhook_deliveries.labels(outcome, event_label).inc()
        await self._record_failure(webhook_id, now, outcome == "failed", first, error)
        retry_at: datetime | None = fields.get("next_attempt_at")
        return retry_at

    async def _record_failure(
        self, webhook_id: Any, now: datetime, given_up: bool, first: datetime, error: str
    ) -> None:
        """A failed attempt in the webhook's run of failures, and the webhook disabled when the run is long
        enough."""
        settings = self.settings
        window = timedelta(seconds=settings.webhook_retry_seconds)
        failing = await webhooks_db.record_failure(webhook_id, now)
        since = _utc(failing.failing_since) if failing and failing.failing_since else None
        # Disabled when its attempts have failed without a break for the whole window: seen directly, or as
        # a delivery given up whose every attempt fell inside the run of failures.
        if since is not None and (now - since >= window or (given_up and since <= first)):
            reason = f"every attempt failed for {settings.webhook_retry_seconds:.0f} s; the last: {error}"
            if await webhooks_db.disable(webhook_id, reason[:MAX_ERROR_CHARS], now):
                log.warning("disabled webhook %s: %s", webhook_id, reason)
                await outbox_db.fail_pending(webhook_id, "the webhook was disabled: " + reason, now)
