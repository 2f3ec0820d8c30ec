"""Webhooks, their deliveries (the outbox), and the change-stream readers' cursors."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from beanie import Document, PydanticObjectId
from pydantic import ConfigDict, Field
from pymongo import ASCENDING, DESCENDING, IndexModel

from .common import utcnow


class Webhook(Document):
    """A receiver of registry and download events: where to POST them, which ones, and its signing key."""

    model_config = ConfigDict(protected_namespaces=())

    url: str
    events: list[str]
    # An EventQuery's fields (downloadEvents' filter): models, versions and projects apply to every event.
    filter: dict[str, Any] = Field(default_factory=dict)
    description: str | None = None
    # The Standard Webhooks secret (`whsec_` + base64) it signs with; never returned after creation.
    secret: str
    enabled: bool = True
    disabled_reason: str | None = None
    # When the first of an unbroken run of failed attempts happened (None after a success).
    failing_since: datetime | None = None
    # Who created it and with which role: it never delivers what they could not read.
    created_by: str
    creator_role: str
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "webhooks"
        indexes = [IndexModel([("created_at", ASCENDING), ("_id", ASCENDING)], name="created_at")]


class DeliveryStatus(StrEnum):
    PENDING = "PENDING"
    DELIVERED = "DELIVERED"
    FAILED = "FAILED"


class WebhookDelivery(Document):
    """One event for one webhook: the outbox while PENDING, its history after. The `_id` is the
    `webhook-id` header, derived from the change that caused it, so a replayed change inserts nothing."""

    model_config = ConfigDict(protected_namespaces=())

    id: str  # type: ignore[assignment]  # chosen by the writer, not an ObjectId
    webhook_id: PydanticObjectId
    event_type: str
    # Deliveries of one webhook with the same key (the model name) are sent one at a time, in `seq` order.
    key: str
    seq: int
    body: str
    status: DeliveryStatus = DeliveryStatus.PENDING
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utcnow)
    lease_until: datetime | None = None
    last_status_code: int | None = None
    last_error: str | None = None
    first_attempt_at: datetime | None = None
    last_attempt_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None

    class Settings:
        name = "webhook_deliveries"
        indexes = [
            IndexModel([("status", ASCENDING), ("seq", ASCENDING)], name="status_seq"),
            IndexModel([("webhook_id", ASCENDING), ("seq", DESCENDING)], name="webhook_seq"),
            IndexModel(
                [("webhook_id", ASCENDING), ("status", ASCENDING), ("seq", ASCENDING)],
                name="webhook_status_seq",
            ),
        ]


class StreamCursor(Document):
    """Where a change-stream reader stands (its resume token and event count), and who reads it now."""

    id: str  # type: ignore[assignment]  # chosen by the writer, not an ObjectId
    token: dict[str, Any] | None = None
    seq: int = 0
    holder: str | None = None
    lease_until: datetime | None = None

    class Settings:
        name = "stream_cursors"
