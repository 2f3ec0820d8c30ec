"""Webhooks in GraphQL: their records and deliveries, and the mutations that manage them (ADMIN today)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, ClassVar

import strawberry
from strawberry.scalars import JSON

from .. import documents, errors, webhooks
from ..pagination import Page
from ..queries import EventQuery
from .connections import AFTER, BEFORE, FIRST, LAST, Connection, PageWords, page_request
from .context import Info
from .downloads import DownloadFilter
from .enums import graphql_enum
from .errors import DeliveryNotFound, InvalidInput, WebhookNotFound, mutation
from .node import Node, from_doc, global_id, parse_global_id

WebhookEventType = webhooks.WebhookEvent
graphql_enum(
    WebhookEventType,
    "What a webhook can be told about.",
    name="WebhookEventType",
    VERSION_REGISTERED="A version was registered (`model_version.registered.v1`).",
    VERSION_UPDATED="A version's description, tags or metadata changed, or it was unarchived "
    "(`model_version.updated.v1`).",
    VERSION_ARCHIVED="A version was archived (`model_version.archived.v1`).",
    ALIAS_MOVED="An alias was set, moved or removed (`alias.moved.v1`).",
    CHECKSUM_VERIFIED="A version's SHA-256 was verified (`model_version.checksum_verified.v1`).",
    CHECKSUM_MISMATCH="A version's object is not what was declared (`model_version.checksum_mismatch.v1`).",
    DOWNLOAD_COMPLETED="A download reached COMPLETED (`download.completed.v1`).",
    DOWNLOAD_FAILED="A download reached FAILED (`download.failed.v1`).",
)


DeliveryStatus = documents.DeliveryStatus
graphql_enum(
    DeliveryStatus,
    "Where a delivery stands.",
    PENDING="In the outbox: being sent, or waiting to retry.",
    DELIVERED="The receiver answered 2xx.",
    FAILED="Given up (retried for MODELHUB_WEBHOOK_RETRY_SECONDS, or its webhook disabled).",
)


@strawberry.type(description="One event sent (or to be sent) to one webhook.")
class WebhookDelivery:
    page_words: ClassVar[PageWords] = PageWords(
        page="A page of deliveries, newest event first.",
        edge="One delivery and its cursor.",
        one="The delivery.",
        many="deliveries",
    )

    webhook_id: strawberry.ID = strawberry.field(
        description="The `webhook-id` header of its requests (the same on every retry and redelivery): what "
        "receivers deduplicate by, and what `redeliver` takes."
    )
    event_type: str = strawberry.field(description="A `WebhookEventType` name, or TEST (`testWebhook`).")
    status: DeliveryStatus = strawberry.field(description="Where it stands.")
    attempts: int = strawberry.field(description="Requests made so far.")
    next_attempt_at: datetime | None = strawberry.field(description="When the next attempt is due (PENDING).")
    last_attempt_at: datetime | None = strawberry.field(description="When the last attempt was made.")
    last_status_code: int | None = strawberry.field(description="The HTTP status of the last answer, if any.")
    last_error: str | None = strawberry.field(description="Why the last attempt failed, if it did.")
    created_at: datetime = strawberry.field(description="When it entered the outbox.")
    finished_at: datetime | None = strawberry.field(description="When it was delivered or given up.")
    payload: JSON = strawberry.field(description="The JSON body sent: `type`, `timestamp` and `data`.")

    @classmethod
    def from_doc(cls, doc: documents.WebhookDelivery) -> WebhookDelivery:
        pending = doc.status is documents.DeliveryStatus.PENDING
        return from_doc(
            cls,
            doc,
            webhook_id=strawberry.ID(doc.id),
            next_attempt_at=doc.next_attempt_at if pending else None,
            payload=json.loads(doc.body),
        )


WebhookDeliveryConnection = Connection[WebhookDelivery]


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


@strawberry.type(description="An HTTP endpoint that receives signed events (Standard Webhooks).")
class Webhook(Node):
    url: str = strawberry.field(description="Where events are POSTed.")
    events: list[WebhookEventType] = strawberry.field(description="The events it receives.")
    filter: JSON = strawberry.field(
        description="The `DownloadFilter` it was given (set fields only); models, versions and projects "
        "narrow every event, the other fields download events."
    )
    description: str | None = strawberry.field(description="Free text.")
    enabled: bool = strawberry.field(description="Whether events are delivered to it.")
    disabled_reason: str | None = strawberry.field(description="Why it was disabled, if it is.")
    failing_since: datetime | None = strawberry.field(
        description="The start of its current run of failed attempts; it is disabled once this run lasts "
        "MODELHUB_WEBHOOK_RETRY_SECONDS."
    )
    created_by: str = strawberry.field(description="Who created it: it never delivers what they cannot read.")
    created_at: datetime = strawberry.field(description="When it was created.")
    updated_at: datetime = strawberry.field(description="When it was last changed.")
    doc: strawberry.Private[documents.Webhook]

    @strawberry.field(description="What was sent to it (or is to be), newest event first.")
    async def deliveries(
        self, info: Info, first: FIRST = None, after: AFTER = None, last: LAST = None, before: BEFORE = None
    ) -> WebhookDeliveryConnection:
        request = page_request(first, after, last, before)
        page: Page[documents.WebhookDelivery] = await webhooks.deliveries(
            info.context.principal, self.doc, request
        )
        return WebhookDeliveryConnection.of(page, WebhookDelivery.from_doc)

    @classmethod
    def from_doc(cls, doc: documents.Webhook) -> Webhook:
        shown = {
            _camel(k): [str(x) for x in v] if k in ("statuses", "modes") else v for k, v in doc.filter.items()
        }
        events = [WebhookEventType(e) for e in doc.events]
        return from_doc(cls, doc, id=global_id("Webhook", doc.id), events=events, filter=shown, doc=doc)


@strawberry.type(description="A webhook with its signing secret: shown this once, never again.")
class WebhookWithSecret:
    webhook: Webhook = strawberry.field(description="Its record.")
    secret: str = strawberry.field(
        description="`whsec_` + base64 key: verify `webhook-signature` with it (see the README)."
    )


@strawberry.input(description="A new webhook.")
class CreateWebhookInput:
    url: str = strawberry.field(
        description="An http(s) URL; loopback, link-local and private addresses are refused unless the host "
        "is in MODELHUB_WEBHOOK_ALLOWED_HOSTS."
    )
    events: list[WebhookEventType] = strawberry.field(description="At least one event.")
    filter: DownloadFilter | None = strawberry.field(
        default=None,
        description="Which events: models, versions and projects narrow every event; the other fields "
        "narrow download events. All when omitted.",
    )
    description: str | None = strawberry.field(default=None, description="Free text (≤ 1,000 characters).")


@strawberry.input(description="Changes to a webhook; omitted fields stay as they are.")
class UpdateWebhookInput:
    id: strawberry.ID = strawberry.field(description="The webhook's id.")
    url: str | None = strawberry.field(default=None, description="A new URL (checked as at creation).")
    events: list[WebhookEventType] | None = strawberry.field(default=None, description="New events.")
    filter: DownloadFilter | None = strawberry.field(default=None, description="A new filter (replaces it).")
    description: str | None = strawberry.field(default=None, description="A new description.")
    enabled: bool | None = strawberry.field(
        default=None,
        description="false: stop delivering (its pending deliveries fail); true: deliver again, its failures "
        "forgiven (`redeliver` what it missed).",
    )


@strawberry.input(description="Which webhook.")
class WebhookIdInput:
    id: strawberry.ID = strawberry.field(description="The webhook's id.")


@strawberry.input(description="Which delivery to send again.")
class RedeliverInput:
    delivery: strawberry.ID = strawberry.field(description="The delivery's `webhookId`.")


CreateWebhookResult = Annotated[
    WebhookWithSecret | InvalidInput,
    strawberry.union("CreateWebhookResult", description="The webhook and its secret, or why not."),
]
UpdateWebhookResult = Annotated[
    Webhook | InvalidInput | WebhookNotFound,
    strawberry.union("UpdateWebhookResult", description="The changed webhook, or why not."),
]
DeleteWebhookResult = Annotated[
    Webhook | InvalidInput | WebhookNotFound,
    strawberry.union("DeleteWebhookResult", description="The deleted webhook, or why not."),
]
RotateWebhookSecretResult = Annotated[
    WebhookWithSecret | InvalidInput | WebhookNotFound,
    strawberry.union("RotateWebhookSecretResult", description="The webhook and its new secret, or why not."),
]
RedeliverResult = Annotated[
    WebhookDelivery | InvalidInput | DeliveryNotFound,
    strawberry.union("RedeliverResult", description="The delivery, back in the outbox, or why not."),
]
TestWebhookResult = Annotated[
    WebhookDelivery | InvalidInput | WebhookNotFound,
    strawberry.union("TestWebhookResult", description="The test delivery queued, or why not."),
]
INPUT = strawberry.argument(description="What to do; see the input type.")


def _webhook_key(value: str) -> Any:
    type_name, key = parse_global_id(value, "input.id")
    if type_name != "Webhook":
        raise errors.InvalidInput("input.id", "is not the id of a webhook")
    return key


def _query(flt: DownloadFilter | None) -> EventQuery:
    return flt.to_query() if flt is not None else EventQuery()


def _events(events: list[WebhookEventType]) -> list[webhooks.WebhookEvent]:
    return list(events)


@strawberry.type
class WebhookQueries:
    @strawberry.field(
        description="The webhooks the caller may manage (every one for an ADMIN), oldest first."
    )
    async def webhooks(self, info: Info) -> list[Webhook]:
        return [Webhook.from_doc(w) for w in await webhooks.list_webhooks(info.context.principal)]


@strawberry.type
class WebhookMutations:
    @mutation(description="Creates a webhook (ADMIN only); its signing secret is returned once.")
    async def create_webhook(
        self, info: Info, input: Annotated[CreateWebhookInput, INPUT]
    ) -> CreateWebhookResult:
        settings = info.context.services.settings
        doc = await webhooks.create(
            info.context.principal, input.url, _events(input.events), _query(input.filter), input.description,
            settings.webhook_allowed_hosts, settings.webhook_max_count,
        )  # fmt: skip
        return WebhookWithSecret(webhook=Webhook.from_doc(doc), secret=doc.secret)

    @mutation(description="Changes a webhook (ADMIN only).")
    async def update_webhook(
        self, info: Info, input: Annotated[UpdateWebhookInput, INPUT]
    ) -> UpdateWebhookResult:
        change = webhooks.WebhookChange(
            url=input.url,
            events=_events(input.events) if input.events is not None else None,
            filter=input.filter.to_query() if input.filter is not None else None,
            description=input.description,
            enabled=input.enabled,
        )
        allowed = info.context.services.settings.webhook_allowed_hosts
        doc = await webhooks.update(info.context.principal, _webhook_key(input.id), change, allowed)
        return Webhook.from_doc(doc)

    @mutation(description="Deletes a webhook and its deliveries (ADMIN only).")
    async def delete_webhook(
        self, info: Info, input: Annotated[WebhookIdInput, INPUT]
    ) -> DeleteWebhookResult:
        return Webhook.from_doc(await webhooks.delete(info.context.principal, _webhook_key(input.id)))

    @mutation(
        description="Gives a webhook a new signing secret, returned once; every attempt from now on is "
        "signed with it (ADMIN only)."
    )
    async def rotate_webhook_secret(
        self, info: Info, input: Annotated[WebhookIdInput, INPUT]
    ) -> RotateWebhookSecretResult:
        doc = await webhooks.rotate_secret(info.context.principal, _webhook_key(input.id))
        return WebhookWithSecret(webhook=Webhook.from_doc(doc), secret=doc.secret)

    @mutation(
        description="Sends a delivery again, with the same `webhook-id` (receivers that saw it can tell), "
        "retried as a new one would be (ADMIN only)."
    )
    async def redeliver(self, info: Info, input: Annotated[RedeliverInput, INPUT]) -> RedeliverResult:
        return WebhookDelivery.from_doc(await webhooks.redeliver(info.context.principal, str(input.delivery)))

    @mutation(description="Queues a `webhook.test.v1` event for a webhook (ADMIN only).")
    async def test_webhook(self, info: Info, input: Annotated[WebhookIdInput, INPUT]) -> TestWebhookResult:
        return WebhookDelivery.from_doc(
            await webhooks.send_test(info.context.principal, _webhook_key(input.id))
        )
