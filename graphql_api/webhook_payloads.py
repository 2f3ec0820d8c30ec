"""Webhook events and their Standard Webhooks payloads: what a write stands for, bodies, ids, signatures."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from standardwebhooks.webhooks import Webhook as Signer

from .db import outbox as outbox_db
from .documents import AliasChange, ChecksumStatus, DownloadEvent, DownloadStatus, ModelVersion


class WebhookEvent(StrEnum):
    VERSION_REGISTERED = "VERSION_REGISTERED"
    VERSION_UPDATED = "VERSION_UPDATED"
    VERSION_ARCHIVED = "VERSION_ARCHIVED"
    ALIAS_MOVED = "ALIAS_MOVED"
    CHECKSUM_VERIFIED = "CHECKSUM_VERIFIED"
    CHECKSUM_MISMATCH = "CHECKSUM_MISMATCH"
    DOWNLOAD_COMPLETED = "DOWNLOAD_COMPLETED"
    DOWNLOAD_FAILED = "DOWNLOAD_FAILED"


# The payload's `type`: versioned, so that a changed shape is a new type and receivers can tell.
PAYLOAD_TYPES: dict[WebhookEvent, str] = {
    WebhookEvent.VERSION_REGISTERED: "model_version.registered.v1",
    WebhookEvent.VERSION_UPDATED: "model_version.updated.v1",
    WebhookEvent.VERSION_ARCHIVED: "model_version.archived.v1",
    WebhookEvent.ALIAS_MOVED: "alias.moved.v1",
    WebhookEvent.CHECKSUM_VERIFIED: "model_version.checksum_verified.v1",
    WebhookEvent.CHECKSUM_MISMATCH: "model_version.checksum_mismatch.v1",
    WebhookEvent.DOWNLOAD_COMPLETED: "download.completed.v1",
    WebhookEvent.DOWNLOAD_FAILED: "download.failed.v1",
}
TEST_TYPE = "webhook.test.v1"


# Fields whose change is a VERSION_UPDATED (what `updateModelVersion` and unarchiving change).
NOTE_FIELDS = frozenset({"description", "tags", "metadata"})


def events_of(change: outbox_db.RecordChange) -> list[WebhookEvent]:
    """The webhook events one recorded write stands for."""
    doc = change.document
    if isinstance(doc, AliasChange):
        return [WebhookEvent.ALIAS_MOVED]
    if isinstance(doc, DownloadEvent):
        if doc.status is DownloadStatus.COMPLETED:
            return [WebhookEvent.DOWNLOAD_COMPLETED]
        return [WebhookEvent.DOWNLOAD_FAILED] if doc.status is DownloadStatus.FAILED else []
    found: list[WebhookEvent] = []
    checksum = {ChecksumStatus.VERIFIED: WebhookEvent.CHECKSUM_VERIFIED,
                ChecksumStatus.MISMATCH: WebhookEvent.CHECKSUM_MISMATCH}.get(doc.checksum_status)  # fmt: skip
    if change.insert:
        found.append(WebhookEvent.VERSION_REGISTERED)
        if checksum is not None:  # the store vouched for it at registration
            found.append(checksum)
        return found
    if "archived" in change.updated:
        found.append(WebhookEvent.VERSION_ARCHIVED if doc.archived else WebhookEvent.VERSION_UPDATED)
    if change.updated & NOTE_FIELDS and WebhookEvent.VERSION_UPDATED not in found:
        found.append(WebhookEvent.VERSION_UPDATED)
    if "checksum_status" in change.updated and checksum is not None:
        found.append(checksum)
    return found


def project_of(doc: ModelVersion | AliasChange | DownloadEvent) -> str | None:
    """The event's project, when its record says (an alias move's is its model's: the caller looks it up)."""
    return None if isinstance(doc, AliasChange) else doc.project_name


def global_id(type_name: str, key: object) -> str:
    # The same encoding as the GraphQL Node ids (schema/node.py), so payload ids can be queried back.
    return base64.urlsafe_b64encode(f"{type_name}:{key}".encode()).decode().rstrip("=")


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    value = value if value.tzinfo else value.replace(tzinfo=UTC)
    return value.isoformat().replace("+00:00", "Z")


def data_of(doc: ModelVersion | AliasChange | DownloadEvent) -> dict[str, Any]:
    """The event's subject with the field names of its GraphQL type."""
    if isinstance(doc, ModelVersion):
        return {
            "id": global_id("ModelVersion", doc.id), "name": doc.name, "version": doc.version,
            "projectName": doc.project_name, "owner": doc.owner, "description": doc.description,
            "tags": doc.tags, "metadata": doc.metadata, "bucket": doc.bucket, "key": doc.key,
            "sizeBytes": doc.size_bytes, "etag": doc.etag, "contentType": doc.content_type,
            "createdAt": iso(doc.created_at), "archived": doc.archived, "sha256": doc.sha256,
            "checksumStatus": doc.checksum_status.value, "checksumError": doc.checksum_error,
        }  # fmt: skip
    if isinstance(doc, AliasChange):
        return {
            "id": global_id("AliasChange", doc.id), "modelName": doc.model_name, "alias": doc.alias,
            "fromVersion": doc.from_version, "toVersion": doc.to_version, "changedBy": doc.changed_by,
            "changedAt": iso(doc.changed_at),
        }  # fmt: skip
    return {
        "id": global_id("DownloadEvent", doc.id), "modelName": doc.model_name, "version": doc.model_version,
        "projectName": doc.project_name, "sizeBytes": doc.size_bytes, "engineer": doc.engineer,
        "userAgent": doc.user_agent, "mode": doc.mode.value, "status": doc.status.value,
        "bytesSent": doc.bytes_sent, "rangeStart": doc.range_start, "rangeEnd": doc.range_end,
        "startedAt": iso(doc.started_at), "transferStartedAt": iso(doc.transfer_started_at),
        "finishedAt": iso(doc.finished_at), "durationSeconds": doc.duration_seconds,
        "failureReason": doc.error, "completesDownload": doc.completes,
    }  # fmt: skip


def key_of(doc: ModelVersion | AliasChange | DownloadEvent) -> str:
    """The ordering key: deliveries to one webhook with one key are sent one at a time, in order. Registry
    events key on their model; download outcomes on the download itself (one event each), since ordering a
    busy model's downloads would send them one at a time, at the pace of the receiver's latency."""
    if isinstance(doc, DownloadEvent):
        return f"download:{doc.id}"
    return doc.name if isinstance(doc, ModelVersion) else doc.model_name


def payload_body(payload_type: str, when: datetime, data: dict[str, Any]) -> str:
    return json.dumps({"type": payload_type, "timestamp": iso(when), "data": data}, separators=(",", ":"))


def delivery_id(token: dict[str, Any], event: WebhookEvent, webhook_id: Any) -> str:
    """The `webhook-id`: the same for the same change, event and webhook, however often it is replayed."""
    raw = json.dumps([token.get("_data", str(token)), event.value, str(webhook_id)]).encode()
    return "msg_" + hashlib.sha256(raw).hexdigest()[:32]


def signed_headers(secret: str, delivery_id_: str, body: str, now: datetime) -> dict[str, str]:
    """The Standard Webhooks headers for one attempt (the timestamp is the attempt's)."""
    return {
        "webhook-id": delivery_id_,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Signer(secret).sign(delivery_id_, now, body),
        "content-type": "application/json",
        "user-agent": "modelhub-webhooks/1",
    }
