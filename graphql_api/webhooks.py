"""Webhooks as a use case: who may manage them, their creation and changes, which events they receive, and
the signed Standard Webhooks payloads of those events."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from beanie import PydanticObjectId
from standardwebhooks.webhooks import Webhook as Signer

from . import targets
from .analytics.feed import matcher
from .auth import Principal
from .db import outbox as outbox_db
from .db import webhooks as webhooks_db
from .documents import (
    AliasChange,
    ChecksumStatus,
    DownloadEvent,
    DownloadStatus,
    ModelVersion,
    Webhook,
    utcnow,
)
from .documents import WebhookDelivery as Delivery
from .errors import DeliveryNotFound, Forbidden, InvalidInput, WebhookNotFound
from .pagination import Page, PageRequest
from .queries import EventQuery
from .roles import ProjectRole, Role
from .scope import has_role

MAX_DESCRIPTION = 1000


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
# What a webhook records as its creator's role when the creator had none globally (only project grants).
NO_GLOBAL_ROLE = "NONE"
GLOBAL_ROLES = frozenset(r.value for r in Role)
# Fields whose change is a VERSION_UPDATED (what `updateModelVersion` and unarchiving change).
_NOTE_FIELDS = frozenset({"description", "tags", "metadata"})
# Filter fields that every event has; the others describe downloads and only narrow download events.
_COMMON_FILTERS = ("model_names", "versions", "project_names")


# ---- who may do what (the one place; projects as permission boundaries add a MAINTAINER rule here) ----


def may_manage_webhooks(principal: Principal, projects: Iterable[str]) -> bool:
    """Whether `principal` may create or change a webhook limited to `projects` (empty: all projects): an
    ADMIN always; a project's MAINTAINER for a non-empty list of projects it maintains, all of them."""
    if principal.role is Role.ADMIN:
        return True
    wanted = list(projects)
    return bool(wanted) and all(has_role(principal, p, ProjectRole.MAINTAINER) for p in wanted)


def may_read(creator_role: str, webhook_projects: Iterable[str], project_name: str) -> bool:
    """Whether a webhook's creator could read an event of `project_name`: a webhook never delivers more. A
    creator with a global role reads every project; any other created it as MAINTAINER of the projects its
    filter names (may_manage_webhooks), and it delivers those projects' events only."""
    if creator_role in GLOBAL_ROLES:
        return True
    return project_name in set(webhook_projects)


def ident(webhook: Webhook) -> PydanticObjectId:
    assert webhook.id is not None  # every stored webhook has one
    return webhook.id


def _require_any(principal: Principal) -> None:
    """FORBIDDEN unless `principal` may manage some webhook: an ADMIN, or a MAINTAINER of some project."""
    if principal.role is not Role.ADMIN and ProjectRole.MAINTAINER not in principal.grants.values():
        raise Forbidden(
            "managing webhooks needs the ADMIN role or MAINTAINER of a project; "
            f"{principal.engineer} has neither"
        )


def _require(principal: Principal, projects: Iterable[str]) -> None:
    if not may_manage_webhooks(principal, projects):
        raise Forbidden(
            "managing a webhook needs the ADMIN role, or MAINTAINER of every project its filter names; "
            f"{principal.engineer} has neither"
        )


# ---- management ----


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass(frozen=True)
class WebhookChange:
    url: str | None = None
    events: list[WebhookEvent] | None = None
    filter: EventQuery | None = None
    description: str | None = None
    enabled: bool | None = None


def _filter_doc(query: EventQuery) -> dict[str, Any]:
    query.validate()
    return {f.name: v for f in dataclasses.fields(query) if (v := getattr(query, f.name)) not in (None, [])}


def filter_of(webhook: Webhook) -> EventQuery:
    return EventQuery(**webhook.filter)


async def _check_url(url: str, allowed: list[str]) -> str:
    try:
        await targets.resolve(targets.parse(url), allowed)
    except targets.UnsafeTarget as exc:
        raise InvalidInput("input.url", str(exc)) from None
    return url


def _check_events(events: list[WebhookEvent]) -> list[str]:
    if not events:
        raise InvalidInput("input.events", "name at least one event")
    return sorted({e.value for e in events})


def _check_description(description: str | None) -> str | None:
    if description is not None and len(description) > MAX_DESCRIPTION:
        raise InvalidInput("input.description", f"must be at most {MAX_DESCRIPTION} characters")
    return description


async def create(
    principal: Principal, url: str, events: list[WebhookEvent], query: EventQuery, description: str | None,
    allowed_hosts: list[str], max_count: int,
) -> Webhook:  # fmt: skip
    """A new webhook; its secret is on the returned record, for the caller to show once."""
    _require(principal, query.project_names)
    doc = Webhook(
        url=await _check_url(url, allowed_hosts),
        events=_check_events(events),
        filter=_filter_doc(query),
        description=_check_description(description),
        secret=new_secret(),
        created_by=principal.engineer,
        creator_role=principal.role.value if principal.role is not None else NO_GLOBAL_ROLE,
    )
    if await webhooks_db.count() >= max_count:
        raise InvalidInput("input", f"at most {max_count} webhooks may exist (MODELHUB_WEBHOOK_MAX_COUNT)")
    await webhooks_db.insert(doc)
    return doc


async def get(principal: Principal, webhook_id: Any) -> Webhook:
    """The webhook, when `principal` may manage it; one it may not is WEBHOOK_NOT_FOUND like a missing one."""
    _require_any(principal)
    found = await webhooks_db.get(webhook_id)
    if found is None or not may_manage_webhooks(principal, found.filter.get("project_names", [])):
        raise WebhookNotFound()
    return found


async def visible(principal: Principal | None, webhook_id: Any) -> Webhook | None:
    """The webhook for `node(id:)`: None when it does not exist or `principal` may not manage it (the same
    answer)."""
    if principal is None:
        return None
    found = await webhooks_db.get(webhook_id)
    if found is None or not may_manage_webhooks(principal, found.filter.get("project_names", [])):
        return None
    return found


async def list_webhooks(principal: Principal) -> list[Webhook]:
    _require_any(principal)
    return [
        w
        for w in await webhooks_db.all_webhooks()
        if may_manage_webhooks(principal, w.filter.get("project_names", []))
    ]


async def update(
    principal: Principal, webhook_id: Any, change: WebhookChange, allowed_hosts: list[str]
) -> Webhook:
    current = await get(principal, webhook_id)
    fields: dict[str, Any] = {"updated_at": utcnow()}
    if change.url is not None:
        fields["url"] = await _check_url(change.url, allowed_hosts)
    if change.events is not None:
        fields["events"] = _check_events(change.events)
    if change.filter is not None:
        _require(principal, change.filter.project_names)
        fields["filter"] = _filter_doc(change.filter)
    if change.description is not None:
        fields["description"] = _check_description(change.description)
    unset = []
    if change.enabled is not None:
        fields["enabled"] = change.enabled
        if change.enabled:  # re-enabled: its failures so far are forgiven
            fields["failing_since"] = None
            unset.append("disabled_reason")
        elif current.enabled:
            fields["disabled_reason"] = f"disabled by {principal.engineer}"
    updated = await webhooks_db.update(ident(current), fields, unset)
    if updated is None:
        raise WebhookNotFound()
    if change.enabled is False:
        await outbox_db.fail_pending(ident(updated), "the webhook was disabled", utcnow())
    return updated


async def delete(principal: Principal, webhook_id: Any) -> Webhook:
    """Deletes the webhook and its deliveries (pending ones are never sent)."""
    found = await get(principal, webhook_id)
    await webhooks_db.delete(ident(found))
    await outbox_db.delete_for(ident(found))
    return found


async def rotate_secret(principal: Principal, webhook_id: Any) -> Webhook:
    """A new secret, used for every attempt from now on (retries of older events too)."""
    found = await get(principal, webhook_id)
    updated = await webhooks_db.update(ident(found), {"secret": new_secret(), "updated_at": utcnow()})
    if updated is None:
        raise WebhookNotFound()
    return updated


async def deliveries(principal: Principal, webhook: Webhook, request: PageRequest) -> Page[Delivery]:
    _require(principal, webhook.filter.get("project_names", []))
    return await outbox_db.page(ident(webhook), request)


async def redeliver(principal: Principal, delivery_id: str) -> Delivery:
    """Puts a delivery back in the outbox with the same `webhook-id`, for its webhook to receive again."""
    found = await outbox_db.get(delivery_id)
    if found is None:
        raise DeliveryNotFound()
    webhook = await get(principal, found.webhook_id)
    if not webhook.enabled:
        raise InvalidInput("input.delivery", "its webhook is disabled: enable it first (updateWebhook)")
    again = await outbox_db.requeue(delivery_id, ident(webhook), utcnow())
    if again is None:
        raise DeliveryNotFound()
    return again


async def send_test(principal: Principal, webhook_id: Any) -> Delivery:
    """Queues a `webhook.test.v1` event for the webhook (delivered like any other, and listed)."""
    webhook = await get(principal, webhook_id)
    if not webhook.enabled:
        raise InvalidInput("input.id", "the webhook is disabled: enable it first (updateWebhook)")
    now = utcnow()
    data = {"webhookId": _global_id("Webhook", webhook.id), "requestedBy": principal.engineer}
    delivery = Delivery(
        id="msg_" + secrets.token_hex(16),
        webhook_id=ident(webhook),
        event_type="TEST",
        key="",
        seq=_now_seq(now),
        body=_body(TEST_TYPE, now, data),
    )
    await outbox_db.insert_deliveries([delivery])
    return delivery


def _now_seq(now: datetime) -> int:
    # Test deliveries sort among events by time; event deliveries take the stream's own count, far smaller.
    return int(now.timestamp() * 1000) * 1000


# ---- events and payloads ----


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
    if change.updated & _NOTE_FIELDS and WebhookEvent.VERSION_UPDATED not in found:
        found.append(WebhookEvent.VERSION_UPDATED)
    if "checksum_status" in change.updated and checksum is not None:
        found.append(checksum)
    return found


def project_of(doc: ModelVersion | AliasChange | DownloadEvent) -> str | None:
    """The event's project, when its record says (an alias move's is its model's: the caller looks it up)."""
    return None if isinstance(doc, AliasChange) else doc.project_name


def wants(
    webhook: Webhook, event: WebhookEvent, doc: ModelVersion | AliasChange | DownloadEvent, project: str
) -> bool:
    """Whether `webhook` receives `event` about `doc` (of `project`): enabled, subscribed, its filter
    matches, and its creator could read it."""
    if not webhook.enabled or event.value not in webhook.events:
        return False
    query = filter_of(webhook)
    if isinstance(doc, DownloadEvent):
        if not matcher(query)(doc):
            return False
    else:
        name, version = (
            (doc.model_name, doc.to_version) if isinstance(doc, AliasChange) else (doc.name, doc.version)
        )
        if query.model_names and name not in query.model_names:
            return False
        if query.versions and version not in query.versions:
            return False
        if query.project_names and project not in query.project_names:
            return False
    return may_read(webhook.creator_role, webhook.filter.get("project_names") or [], project)


def _global_id(type_name: str, key: object) -> str:
    # The same encoding as the GraphQL Node ids (schema/node.py), so payload ids can be queried back.
    return base64.urlsafe_b64encode(f"{type_name}:{key}".encode()).decode().rstrip("=")


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    value = value if value.tzinfo else value.replace(tzinfo=UTC)
    return value.isoformat().replace("+00:00", "Z")


def data_of(doc: ModelVersion | AliasChange | DownloadEvent) -> dict[str, Any]:
    """The event's subject with the field names of its GraphQL type."""
    if isinstance(doc, ModelVersion):
        return {
            "id": _global_id("ModelVersion", doc.id), "name": doc.name, "version": doc.version,
            "projectName": doc.project_name, "owner": doc.owner, "description": doc.description,
            "tags": doc.tags, "metadata": doc.metadata, "bucket": doc.bucket, "key": doc.key,
            "sizeBytes": doc.size_bytes, "etag": doc.etag, "contentType": doc.content_type,
            "createdAt": _iso(doc.created_at), "archived": doc.archived, "sha256": doc.sha256,
            "checksumStatus": doc.checksum_status.value, "checksumError": doc.checksum_error,
        }  # fmt: skip
    if isinstance(doc, AliasChange):
        return {
            "id": _global_id("AliasChange", doc.id), "modelName": doc.model_name, "alias": doc.alias,
            "fromVersion": doc.from_version, "toVersion": doc.to_version, "changedBy": doc.changed_by,
            "changedAt": _iso(doc.changed_at),
        }  # fmt: skip
    return {
        "id": _global_id("DownloadEvent", doc.id), "modelName": doc.model_name, "version": doc.model_version,
        "projectName": doc.project_name, "sizeBytes": doc.size_bytes, "engineer": doc.engineer,
        "userAgent": doc.user_agent, "mode": doc.mode.value, "status": doc.status.value,
        "bytesSent": doc.bytes_sent, "rangeStart": doc.range_start, "rangeEnd": doc.range_end,
        "startedAt": _iso(doc.started_at), "transferStartedAt": _iso(doc.transfer_started_at),
        "finishedAt": _iso(doc.finished_at), "durationSeconds": doc.duration_seconds,
        "failureReason": doc.error, "completesDownload": doc.completes,
    }  # fmt: skip


def key_of(doc: ModelVersion | AliasChange | DownloadEvent) -> str:
    """The ordering key: deliveries to one webhook with one key are sent one at a time, in order. Registry
    events key on their model; download outcomes on the download itself (one event each), since ordering a
    busy model's downloads would send them one at a time, at the pace of the receiver's latency."""
    if isinstance(doc, DownloadEvent):
        return f"download:{doc.id}"
    return doc.name if isinstance(doc, ModelVersion) else doc.model_name


def _body(payload_type: str, when: datetime, data: dict[str, Any]) -> str:
    return json.dumps({"type": payload_type, "timestamp": _iso(when), "data": data}, separators=(",", ":"))


def delivery_id(token: dict[str, Any], event: WebhookEvent, webhook_id: Any) -> str:
    """The `webhook-id`: the same for the same change, event and webhook, however often it is replayed."""
    raw = json.dumps([token.get("_data", str(token)), event.value, str(webhook_id)]).encode()
    return "msg_" + hashlib.sha256(raw).hexdigest()[:32]


def deliveries_for(
    change: outbox_db.RecordChange, seq: int, hooks: list[Webhook], project: str
) -> list[Delivery]:
    """The deliveries one change makes for `hooks` (the same ids every time it is replayed)."""
    doc = change.document
    found = []
    for event in events_of(change):
        body = _body(PAYLOAD_TYPES[event], utcnow(), data_of(doc))
        for hook in hooks:
            if wants(hook, event, doc, project):
                found.append(
                    Delivery(
                        id=delivery_id(change.token, event, hook.id), webhook_id=ident(hook),
                        event_type=event.value, key=key_of(doc), seq=seq, body=body,
                    )
                )  # fmt: skip
    return found


def signed_headers(secret: str, delivery_id_: str, body: str, now: datetime) -> dict[str, str]:
    """The Standard Webhooks headers for one attempt (the timestamp is the attempt's)."""
    return {
        "webhook-id": delivery_id_,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Signer(secret).sign(delivery_id_, now, body),
        "content-type": "application/json",
        "user-agent": "modelhub-webhooks/1",
    }
