"""Webhooks as a use case: who may manage them, their creation and changes, which events they receive (their
signed Standard Webhooks payloads are webhook_payloads.py's)."""

from __future__ import annotations

import base64
import dataclasses
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from beanie import PydanticObjectId

from . import targets
from .analytics.feed_items import matcher
from .auth import Principal
from .db import outbox as outbox_db
from .db import webhooks as webhooks_db
from .documents import AliasChange, DownloadEvent, ModelVersion, Webhook, utcnow
from .documents import WebhookDelivery as Delivery
from .errors import DeliveryNotFound, Forbidden, InvalidInput, WebhookNotFound
from .pagination import Page, PageRequest
from .queries import EventQuery
from .roles import ProjectRole, Role
from .scope import has_role
from .webhook_payloads import PAYLOAD_TYPES, TEST_TYPE, data_of, delivery_id, global_id, payload_body

# Re-exported: the payload side's names, where delivery.py, the schema and tests have always found them.
from .webhook_payloads import WebhookEvent as WebhookEvent
from .webhook_payloads import events_of as events_of
from .webhook_payloads import key_of as key_of
from .webhook_payloads import project_of as project_of
from .webhook_payloads import signed_headers as signed_headers

MAX_DESCRIPTION = 1000
# What a webhook records as its creator's role when the creator had none globally (only project grants).
NO_GLOBAL_ROLE = "NONE"
GLOBAL_ROLES = frozenset(r.value for r in Role)
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
    data = {"webhookId": global_id("Webhook", webhook.id), "requestedBy": principal.engineer}
    delivery = Delivery(
        id="msg_" + secrets.token_hex(16),
        webhook_id=ident(webhook),
        event_type="TEST",
        key="",
        seq=_now_seq(now),
        body=payload_body(TEST_TYPE, now, data),
    )
    await outbox_db.insert_deliveries([delivery])
    return delivery


def _now_seq(now: datetime) -> int:
    # Test deliveries sort among events by time; event deliveries take the stream's own count, far smaller.
    return int(now.timestamp() * 1000) * 1000


# ---- events and payloads ----


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


def deliveries_for(
    change: outbox_db.RecordChange, seq: int, hooks: list[Webhook], project: str
) -> list[Delivery]:
    """The deliveries one change makes for `hooks` (the same ids every time it is replayed)."""
    doc = change.document
    found = []
    for event in events_of(change):
        body = payload_body(PAYLOAD_TYPES[event], utcnow(), data_of(doc))
        for hook in hooks:
            if wants(hook, event, doc, project):
                found.append(
                    Delivery(
                        id=delivery_id(change.token, event, hook.id), webhook_id=ident(hook),
                        event_type=event.value, key=key_of(doc), seq=seq, body=body,
                    )
                )  # fmt: skip
    return found
