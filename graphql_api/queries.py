"""The query vocabulary shared by collection owners and use cases: filters, orders, dimensions, metrics.

Plain data with its own validation; how each is translated into a MongoDB filter or pipeline is the business
of the collection owner that runs it (`db/`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from . import figures
from .documents import ClientKind, DownloadMode, DownloadStatus
from .errors import InvalidInput

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

Q = TypeVar("Q", bound="DataclassInstance")

MAX_STATS_LIMIT = 1000
# The most values one list of a filter may hold (`modelNames`, `engineers`, ...): the database matches each,
# and a filter's price does not grow with its lists (85,000 names took 8 s of database time at one price).
MAX_FILTER_VALUES = 100


def check_lists(query: Q, prefix: str = "filter") -> Q:
    """InvalidInput on the first list field of a filter dataclass holding more than MAX_FILTER_VALUES (the
    field named as in GraphQL, after `prefix`). For what a client sends: a query narrowed to a caller's
    projects may list more (every project it may read)."""
    for item in fields(query):
        value = getattr(query, item.name)
        if isinstance(value, list) and len(value) > MAX_FILTER_VALUES:
            head, *rest = item.name.split("_")
            name = head + "".join(word.capitalize() for word in rest)
            message = f"at most {MAX_FILTER_VALUES} values, got {len(value)}"
            raise InvalidInput(f"{prefix}.{name}" if prefix else name, message)
    return query


def day_of(moment: datetime) -> datetime:
    """The UTC midnight that starts `moment`'s day."""
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def hour_of(moment: datetime) -> datetime:
    """The start of `moment`'s UTC hour."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def truncate(moment: datetime, interval: Interval) -> datetime:
    """Python's $dateTrunc in UTC (weeks start on Monday)."""
    if interval is Interval.HOUR:
        return hour_of(moment)
    day = day_of(moment)
    if interval is Interval.DAY:
        return day
    if interval is Interval.WEEK:
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def check_time_zone(time_zone: str | None) -> None:
    """InvalidInput("timeZone") unless it is None or an IANA zone this machine knows."""
    if time_zone is not None:
        try:
            ZoneInfo(time_zone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise InvalidInput("timeZone", f"unknown time zone {time_zone!r}") from exc


@dataclass(frozen=True)
class CursorKeyed:
    """An order: a field (each order's own enum and default), which way, and its short name for cursors
    (`NAME_ASC`): a cursor made for one order is refused by another."""

    field: StrEnum
    descending: bool = True

    @property
    def key(self) -> str:
        return f"{self.field.value}_{'DESC' if self.descending else 'ASC'}"


class ModelOrderField(StrEnum):
    CREATED_AT = "CREATED_AT"
    UPDATED_AT = "UPDATED_AT"
    NAME = "NAME"
    DOWNLOADS = "DOWNLOADS"


@dataclass(frozen=True)
class ModelOrder(CursorKeyed):
    field: ModelOrderField = ModelOrderField.CREATED_AT


@dataclass
class ModelQuery:
    """A filter over models (one per name)."""

    names: list[str] = field(default_factory=list)
    name_prefix: str | None = None
    project_names: list[str] = field(default_factory=list)
    owners: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    created_after: datetime | None = None
    created_before: datetime | None = None

    def validate(self) -> None:
        if self.created_after and self.created_before and self.created_after > self.created_before:
            raise InvalidInput("filter.createdAfter", "must not be later than createdBefore")


class VersionOrderField(StrEnum):
    VERSION = "VERSION"
    CREATED_AT = "CREATED_AT"


@dataclass(frozen=True)
class VersionOrder(CursorKeyed):
    field: VersionOrderField = VersionOrderField.VERSION


@dataclass
class VersionQuery:
    """A filter over the versions of one model."""

    name: str
    include_archived: bool = False


@dataclass
class DownloadWindow:
    """The time window whose completed downloads order `models(orderBy: DOWNLOADS_DESC)`."""

    since: datetime | None = None
    until: datetime | None = None


@dataclass
class EventQuery:
    """A filter over download events, shared by the `downloads` list and `downloadStats`.

    Every field left at its empty value means "any"; a collection owner that cannot express a set field
    must say so (rollups then fall back to raw events), never drop it.
    """

    model_names: list[str] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    project_names: list[str] = field(default_factory=list)
    engineers: list[str] = field(default_factory=list)
    statuses: list[DownloadStatus] = field(default_factory=list)
    modes: list[DownloadMode] = field(default_factory=list)
    client_kinds: list[ClientKind] = field(default_factory=list)
    # Requested aliases (None: downloads that did not ask by alias); kept by raw events only.
    aliases: list[str | None] = field(default_factory=list)
    since: datetime | None = None
    until: datetime | None = None
    min_bytes: int | None = None

    def validate(self) -> None:
        if self.since and self.until and self.since > self.until:
            raise InvalidInput("filter.since", "must not be later than filter.until")
        if any(v < 1 for v in self.versions):
            raise InvalidInput("filter.versions", "must be at least 1")
        if self.min_bytes is not None and self.min_bytes < 0:
            raise InvalidInput("filter.minBytes", "must not be negative")


class DownloadOrderField(StrEnum):
    STARTED_AT = "STARTED_AT"
    BYTES_SENT = "BYTES_SENT"
    DURATION = "DURATION"


@dataclass(frozen=True)
class DownloadOrder(CursorKeyed):
    field: DownloadOrderField = DownloadOrderField.STARTED_AT


class Dimension(StrEnum):
    MODEL = "MODEL"
    VERSION = "VERSION"
    PROJECT = "PROJECT"
    ENGINEER = "ENGINEER"
    MODE = "MODE"
    STATUS = "STATUS"
    CLIENT_KIND = "CLIENT_KIND"
    CLIENT_VERSION = "CLIENT_VERSION"
    # The alias a download asked for (null: asked by number or for the latest); raw events only.
    ALIAS = "ALIAS"


class Interval(StrEnum):
    HOUR = "HOUR"
    DAY = "DAY"
    WEEK = "WEEK"
    MONTH = "MONTH"


class StatsMetric(StrEnum):
    PERIOD_START = "PERIOD_START"
    DOWNLOADS = "DOWNLOADS"
    COMPLETED = "COMPLETED"
    ABORTED = "ABORTED"
    FAILED = "FAILED"
    TOTAL_BYTES = "TOTAL_BYTES"
    AVG_DURATION = "AVG_DURATION"
    P50_DURATION = "P50_DURATION"
    P95_DURATION = "P95_DURATION"
    P99_DURATION = "P99_DURATION"
    MAX_DURATION = "MAX_DURATION"
    UNIQUE_ENGINEERS = "UNIQUE_ENGINEERS"
    DISTINCT_DOWNLOADS = "DISTINCT_DOWNLOADS"


class StatsSource(StrEnum):
    RAW = "RAW"
    ROLLUP = "ROLLUP"
    HYBRID = "HYBRID"


# The name of each metric in a stats row (and in the documents a stats pipeline returns): figures.FIGURES.
METRIC_FIELDS: dict[StatsMetric, str] = {StatsMetric(name): row for name, row in figures.METRIC_NAMES.items()}
figures.require_names([m.value for m in StatsMetric], list(figures.METRIC_NAMES), "queries.StatsMetric")
figures.require(
    {d.filter for d in figures.DIMENSIONS if d.filter} <= {f.name for f in fields(EventQuery)},
    "a dimension's filter is not a field of queries.EventQuery",
)
figures.require_names([d.value for d in Dimension], list(figures.DIMENSION), "queries.Dimension")


@dataclass
class StatsRequest:
    """What `downloadStats` asks: a filter, dimensions, an optional time bucket, an order and a limit."""

    query: EventQuery
    group_by: list[Dimension]
    interval: Interval | None = None
    time_zone: str | None = None
    order_by: StatsMetric | None = None
    descending: bool = True
    limit: int = 100
    exact: bool = False
    offset: int = 0

    def validate(self, max_hour_range_days: int, max_limit: int = MAX_STATS_LIMIT) -> None:
        self.query.validate()
        if not 1 <= self.limit <= max_limit:
            raise InvalidInput("limit", f"must be between 1 and {max_limit}, got {self.limit}")
        if self.offset < 0:
            raise InvalidInput("after", "malformed cursor")
        if len(set(self.group_by)) != len(self.group_by):
            raise InvalidInput("groupBy", "lists a dimension twice")
        check_time_zone(self.time_zone)
        if self.interval is Interval.HOUR:
            self._check_hour_range(max_hour_range_days)
        if self.order_by is StatsMetric.PERIOD_START and self.interval is None:
            raise InvalidInput("orderBy", "PERIOD_START needs an interval")

    def _check_hour_range(self, max_days: int) -> None:
        q = self.query
        if q.since is None:
            raise InvalidInput("filter.since", f"HOUR buckets need a since at most {max_days} days back")
        until = q.until or datetime.now(UTC)
        if until - q.since > timedelta(days=max_days):
            raise InvalidInput(
                "interval", f"HOUR buckets may span at most {max_days} days; use DAY or narrow the range"
            )

    @property
    def tz(self) -> str:
        return self.time_zone or "UTC"

    @property
    def sort_metric(self) -> StatsMetric:
        return self.order_by or StatsMetric.DOWNLOADS
