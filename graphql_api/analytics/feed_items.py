"""What the live feed takes and hands out: its items and their cursors, the filter that matches one event in
memory (also the webhooks'), its limits and its errors."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import bson

from ..db import events as events_db
from ..documents import DownloadEvent, DownloadStatus
from ..errors import DomainError, InvalidInput
from ..queries import EventQuery

log = logging.getLogger("modelhub.feed")


class SubscriberTooSlow(DomainError):
    """The subscriber fell more than its buffer behind; it should reconnect with its last cursor."""

    code = "SUBSCRIBER_TOO_SLOW"


@dataclass(frozen=True)
class FeedItem:
    cursor: str
    status: DownloadStatus
    event: DownloadEvent
    # Where its cursor stands in the change history (None: a token whose order this code cannot tell).
    position: events_db.Position | None = dataclasses.field(default=None, compare=False, repr=False)


def _any_of(attr: str) -> Callable[[list[Any], DownloadEvent], bool]:
    return lambda values, e: getattr(e, attr) in values


# How each filter field matches one event in memory; like the collection owners' translations, a set field
# without an entry is refused, never ignored.
MATCHERS: Mapping[str, Callable[[Any, DownloadEvent], bool]] = {
    "model_names": _any_of("model_name"),
    "versions": _any_of("model_version"),
    "project_names": _any_of("project_name"),
    "engineers": _any_of("engineer"),
    "statuses": _any_of("status"),
    "modes": _any_of("mode"),
    "client_kinds": _any_of("client_kind"),
    "since": lambda v, e: e.started_at >= v,
    "until": lambda v, e: e.started_at < v,
    "min_bytes": lambda v, e: e.bytes_sent >= v,
}


def matcher(query: EventQuery) -> Callable[[DownloadEvent], bool]:
    query.validate()
    checks = []
    for f in dataclasses.fields(query):
        value = getattr(query, f.name)
        if value is None or value == []:
            continue
        if f.name not in MATCHERS:
            raise TypeError(f"filter field {f.name!r} has no matcher for the live feed")
        checks.append((MATCHERS[f.name], value))
    return lambda event: all(check(value, event) for check, value in checks)


def encode_cursor(token: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(bson.encode(token)).decode().rstrip("=")


def decode_cursor(cursor: str) -> dict[str, Any]:
    try:
        return dict(bson.decode(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))))
    except (ValueError, binascii.Error, bson.errors.BSONError) as exc:
        raise InvalidInput("after", "malformed cursor") from exc


class SubscriptionLimitReached(DomainError):
    """A cap on live subscriptions (per principal, per instance, or resuming at once) is reached."""

    code = "SUBSCRIPTION_LIMIT_REACHED"


class FeedEnded(DomainError):
    """The shared change stream ended (the database went away or restarted): reconnect with `after`."""

    code = "FEED_ENDED"


@dataclass(frozen=True)
class FeedLimits:
    """How many subscribers an instance takes (None: no cap)."""

    per_principal: int | None = None
    per_instance: int | None = None
    catching_up: int | None = None
    catching_up_per_principal: int | None = None


def item_of(change: events_db.Transition) -> FeedItem:
    token = change.token
    return FeedItem(encode_cursor(token), change.status, change.event, events_db.position(token))


def refused_cursor(exc: Exception) -> Exception:
    """INVALID_INPUT on `after` when the database refused the cursor a replay opened with (the client's
    fault, told so, logged at debug only); any other error as it is (reported and logged as a server one)."""
    code = events_db.refused_token(exc)
    if code is None:
        return exc
    log.debug("the database refused a feed cursor (code %s): %s", code, exc)
    if code == events_db.HISTORY_LOST:
        refusal = InvalidInput(
            "after", "the cursor is older than the change history the database keeps: subscribe without it"
        )
    else:
        refusal = InvalidInput("after", "malformed cursor")
    refusal.__cause__ = exc
    return refusal
