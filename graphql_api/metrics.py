"""Prometheus metric objects on one registry per app, and the helpers that keep their labels bounded."""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable, Sequence
from itertools import product
from pathlib import Path
from typing import Literal, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from . import __version__

# Downloads run from milliseconds (a small config file) to hours (a 100 GB checkpoint over a slow link).
DURATION_BUCKETS = (
    0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800,
)  # fmt: skip
# 1 KiB * 4^k: 1 KiB to 256 GiB, past 100 GB artifacts., which covers 100 GB artifacts.
SIZE_BUCKETS = tuple(float(1024 * 4**k) for k in range(15))
OPERATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
OTHER = "other"
MODES = ("STREAM", "PRESIGNED")
STATUSES = ("COMPLETED", "ABORTED", "FAILED")
FEED_STREAM_PURPOSES = ("live", "catch_up")
# The roller's stages (documents.RollupStage; tests/unit/test_metric_labels.py checks they agree).
ROLLUP_STAGES = ("recorded", "finished", "verified")
FEED_REFUSALS = ("principal", "instance", "catch_up", "slow")
# Every outcome label a request counter may carry (error codes in lower case); any other code is "error".
DOWNLOAD_OUTCOMES = (
    "issued",
    "invalid_input",
    "unauthenticated",
    "forbidden",
    "rate_limited",
    "model_not_found",
    "model_version_not_found",
    "alias_not_found",
    "model_version_archived",
    "object_deleted",
    "storage_object_not_found",
    "checksum_mismatch",
    "artifact_changed",
    "storage_unavailable",
    "error",
)
REGISTRATION_OUTCOMES = (
    "created",
    "invalid_input",
    "forbidden",
    "model_version_already_exists",
    "storage_object_not_found",
    "checksum_mismatch",
    "storage_unavailable",
    "error",
)
OPERATION_TYPES = ("query", "mutation", "subscription", "unknown")
# modelhub_audit_records_total's kinds (documents.AuditKind) and modelhub_audit_records_dropped_total's
# reasons: the in-memory queue was full, or the insert failed.
AUDIT_KINDS = ("MUTATION", "TOKEN", "REFUSED", "SIGN_IN")
AUDIT_DROP_REASONS = ("queue_full", "write_failed")
# Webhook deliveries: what an attempt came to (delivered; failed and retried later; failed and given up), and
# the event types (TEST: `testWebhook`).
WEBHOOK_OUTCOMES = ("delivered", "retried", "failed")
WEBHOOK_EVENT_TYPES = (
    "VERSION_REGISTERED", "VERSION_UPDATED", "VERSION_ARCHIVED", "ALIAS_MOVED", "CHECKSUM_VERIFIED",
    "CHECKSUM_MISMATCH", "DOWNLOAD_COMPLETED", "DOWNLOAD_FAILED", "TEST",
)  # fmt: skip
# A receiver answers in milliseconds to seconds; an attempt is cut at MODELHUB_WEBHOOK_TIMEOUT_SECONDS.
# Download-event writes sent together (db/batching.py): how many per command.
EVENT_WRITES = ("insert", "finish")
EVENT_BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500)
WEBHOOK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


# modelhub_graphql_persisted_checks_total's results: a registered operation (by hash or by text), one that ran
# unregistered (off/audit modes), one refused (enforce), an unknown hash, a hash that does not match its text.
PERSISTED_RESULTS = ("registered", "unregistered", "refused", "unknown_hash", "hash_mismatch")
# modelhub_model_cache_lookups_total's results: served from memory, read from the database and kept, read
# uncached because the cache's change stream is not open (see model_cache.py).
MODEL_CACHE_RESULTS = ("hit", "miss", "bypass")


GaugeMode = Literal["max", "livemax", "livesum"]
# A metric's series: one tuple of label values each.
Series = Iterable[tuple[str, ...]]
M = TypeVar("M", Counter, Gauge, Histogram)


def each(values: Iterable[str]) -> Series:
    """The series of a metric with one label."""
    return ((value,) for value in values)


def with_series(metric: M, series: Series) -> M:
    """Every series of a bounded label set exists from the start at 0, so rates and ratios read 0 on an idle
    server instead of "no data"."""
    for values in series:
        metric.labels(*values)
    return metric


class Metrics:
    """Every metric the app exports, each declared with the series of its bounded label set. Label values
    come only from enums and configured allowlists."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        operation_allowlist: Iterable[str] = (),
        model_allowlist: Iterable[str] = (),
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.operation_allowlist = frozenset(operation_allowlist)
        self.model_allowlist = frozenset(model_allowlist)
        self.webhook_event_types = frozenset(WEBHOOK_EVENT_TYPES)
        operation_names = (*sorted(self.operation_allowlist), "anonymous", OTHER)
        counter, gauge, histogram = self._counter, self._gauge, self._histogram
        self.registrations = counter(
            "modelhub_registrations_total",
            "registerModel calls by outcome.",
            ["outcome"],
            each(REGISTRATION_OUTCOMES),
        )
        self.download_requests = counter(
            "modelhub_download_requests_total",
            "Download requests (tickets and one-step downloads) by mode and outcome.",
            ["mode", "outcome"],
            product(MODES, DOWNLOAD_OUTCOMES),
        )
        self.downloads_completed = counter(
            "modelhub_downloads_completed_total",
            "Download requests streamed to the end (a Range fetch too; see modelhub_model_downloads_total).",
            ["mode"],
            each(MODES),
        )
        self.downloads_aborted = counter(
            "modelhub_downloads_aborted_total", "Downloads the client abandoned.", ["mode"], each(MODES)
        )
        self.downloads_failed = counter(
            "modelhub_downloads_failed_total", "Downloads the server could not finish.", ["mode"], each(MODES)
        )
        self.download_bytes = counter(
            "modelhub_download_bytes_total", "Artifact bytes sent to clients.", ["mode"], each(MODES)
        )
        self.download_duration = histogram(
            "modelhub_download_duration_seconds",
            "Duration of finished streamed downloads.",
            DURATION_BUCKETS,
            ["mode", "status"],
            product(MODES, STATUSES),
        )
        self.download_size = histogram(
            "modelhub_download_size_bytes",
            "Size of requested artifacts.",
            SIZE_BUCKETS,
            ["mode"],
            each(MODES),
        )
        self.model_downloads = counter(
            "modelhub_model_downloads_total",
            "Completed downloads per allowlisted model name (all others are `other`).",
            ["model"],
        )
        self.in_flight = gauge(
            "modelhub_downloads_in_flight",
            "Downloads being streamed right now.",
            "livesum",
            ["mode"],
            each(MODES),
        )
        self.operations = counter(
            "modelhub_graphql_operations_total",
            "GraphQL operations by type, allowlisted name and outcome; errors count though HTTP says 200.",
            ["operation_type", "operation_name", "outcome"],
            product(OPERATION_TYPES, operation_names, ("success", "error")),
        )
        self.operation_duration = histogram(
            "modelhub_graphql_operation_duration_seconds",
            "GraphQL operation latency.",
            OPERATION_BUCKETS,
            ["operation_type", "operation_name"],
            product(OPERATION_TYPES, operation_names),
        )
        self.persisted = counter(
            "modelhub_graphql_persisted_checks_total",
            "Operations checked against the persisted-operation registry, by result (see operations.py).",
            ["result"],
            each(PERSISTED_RESULTS),
        )
        self.model_cache_lookups = counter(
            "modelhub_model_cache_lookups_total",
            "Models looked up by name for queries, by result (hit, miss, bypass).",
            ["result"],
            each(MODEL_CACHE_RESULTS),
        )
        self.feed_streams = gauge(
            "modelhub_feed_streams",
            "Change streams the live download feed holds open: one shared `live` stream per instance while "
            "anyone subscribes, and a `catch_up` stream per subscriber replaying from its `after` cursor.",
            "livesum",
            ["purpose"],
            each(FEED_STREAM_PURPOSES),
        )
        self.feed_subscribers = gauge(
            "modelhub_feed_subscribers", "Live download feed subscribers.", "livesum"
        )
        self.feed_refused = counter(
            "modelhub_feed_refused_total",
            "Subscriptions refused by a cap (principal, instance, catch_up) or ended as too slow (slow).",
            ["reason"],
            each(FEED_REFUSALS),
        )
        self.audit_records = counter(
            "modelhub_audit_records_total",
            "Audit records written, by kind (MUTATION, TOKEN, REFUSED, SIGN_IN).",
            ["kind"],
            each(AUDIT_KINDS),
        )
        self.audit_dropped = counter(
            "modelhub_audit_records_dropped_total",
            "Audit records lost (each also logged): the queue was full, or the insert failed.",
            ["reason"],
            each(AUDIT_DROP_REASONS),
        )
        self.webhook_deliveries = counter(
            "modelhub_webhook_deliveries_total",
            "Webhook delivery attempts by outcome (delivered, retried, failed: given up) and event type.",
            ["outcome", "event_type"],
            ((outcome, event_type) for event_type, outcome in product(WEBHOOK_EVENT_TYPES, WEBHOOK_OUTCOMES)),
        )
        self.webhook_delivery_seconds = histogram(
            "modelhub_webhook_delivery_seconds",
            "Duration of webhook delivery attempts (resolve, connect, send, read the capped answer).",
            WEBHOOK_BUCKETS,
            ["event_type"],
            each(WEBHOOK_EVENT_TYPES),
        )
        # The outbox is shared by every instance; each reports what it read, and `max` merges workers.
        self.webhook_outbox_depth = gauge(
            "modelhub_webhook_outbox_depth",
            "Webhook deliveries waiting to be sent (PENDING), read every few seconds.",
            "max",
        )
        self.webhook_outbox_oldest_age = gauge(
            "modelhub_webhook_outbox_oldest_age_seconds",
            "Age of the oldest PENDING webhook delivery (0 when there is none).",
            "max",
        )
        # The roller (analytics/roller.py): every worker reads the shared watermark each interval.
        self.rollup_lag = gauge(
            "modelhub_rollup_lag_seconds",
            "Seconds between now and the roller's watermark: stages staged since are not in the rollups yet "
            "(readers add them); about MODELHUB_ROLLUP_LAG_SECONDS plus the interval when it keeps up.",
            "livemax",
        )
        self.rollup_stages_folded = counter(
            "modelhub_rollup_stages_folded",
            "Download stages (recorded, finished, verified) this instance's roller folded into the rollups.",
            ["stage"],
            each(ROLLUP_STAGES),
        )
        self.event_write_batch = histogram(
            "modelhub_event_write_batch_size",
            "Download-event writes sent to the database in one command (group commit: the writes that queued "
            "while the previous one was in flight); 1 when downloads come one at a time.",
            EVENT_BATCH_BUCKETS,
            ["write"],
            each(EVENT_WRITES),
        )
        self.build_info = gauge(
            "modelhub_build_info",
            "Always 1; labels carry the version.",
            "max",
            ["version", "python"],
            [(__version__, platform.python_version())],
        )
        self.build_info.labels(__version__, platform.python_version()).set(1)

    def _counter(self, name: str, text: str, labels: Sequence[str] = (), series: Series = ()) -> Counter:
        return with_series(Counter(name, text, labels, registry=self.registry), series)

    def _gauge(
        self, name: str, text: str, mode: GaugeMode, labels: Sequence[str] = (), series: Series = ()
    ) -> Gauge:
        return with_series(Gauge(name, text, labels, registry=self.registry, multiprocess_mode=mode), series)

    def _histogram(
        self, name: str, text: str, buckets: Sequence[float], labels: Sequence[str], series: Series
    ) -> Histogram:
        return with_series(Histogram(name, text, labels, buckets=buckets, registry=self.registry), series)

    @staticmethod
    def outcome_label(code: str, known: tuple[str, ...]) -> str:
        """An error code as a bounded outcome label: itself (lower case) when known, else "error"."""
        label = code.lower()
        return label if label in known else "error"

    def count_download_request(self, mode: str, code: str) -> None:
        self.download_requests.labels(mode, self.outcome_label(code, DOWNLOAD_OUTCOMES)).inc()

    def count_registration(self, code: str) -> None:
        self.registrations.labels(self.outcome_label(code, REGISTRATION_OUTCOMES)).inc()

    def operation_label(self, name: str | None) -> str:
        if not name:
            return "anonymous"
        return name if name in self.operation_allowlist else OTHER

    def model_label(self, name: str) -> str:
        return name if name in self.model_allowlist else OTHER


def exposition(metrics: Metrics) -> bytes:
    """The text format for /metrics: every worker's values in multiprocess mode, else this process's."""
    from prometheus_client import REGISTRY, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    directory = multiprocess_dir()
    if directory:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    # The app's own registry, plus the default one that holds starlette-exporter's HTTP metrics.
    return generate_latest(metrics.registry) + generate_latest(REGISTRY)


def reap_dead_workers(directory: str) -> list[int]:
    """Drops the live-gauge files of workers that have died, so in-flight gauges stop counting them.

    Counters and histograms of dead workers stay: their events happened and must keep adding up.
    """
    from prometheus_client.multiprocess import mark_process_dead

    dead: set[int] = set()
    for path in Path(directory).glob("*.db"):
        pid_text = path.stem.rsplit("_", 1)[-1]
        if not pid_text.isdigit():
            continue
        pid = int(pid_text)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            dead.add(pid)
        except PermissionError:  # alive, just not ours
            pass
    for pid in dead:
        mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
    return sorted(dead)


def prepare_multiprocess_dir(directory: Path) -> None:
    """Empties the directory before workers start: stale files from an earlier run would add to the counts."""
    import shutil

    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
