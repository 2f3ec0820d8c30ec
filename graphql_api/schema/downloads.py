"""Strawberry types of downloads: tickets, events, their connection, filter and order."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

import strawberry

from .. import documents, queries
from .connections import CountedConnection, PageWords
from .context import Info
from .enums import graphql_enum
from .node import Node, from_doc, global_id
from .scalars import Long
from .types import ModelVersion, Order

DownloadMode = documents.DownloadMode
graphql_enum(
    DownloadMode,
    "How the bytes reach the client.",
    STREAM="Through this server, from a signed single-use URL.",
    PRESIGNED="Straight from the store by a short-lived presigned URL (not tracked further).",
)


ClientKind = documents.ClientKind
graphql_enum(
    ClientKind,
    "Who a download is for, and so whether it is a person's download.",
    CI="A CI job: its token's kind, or the SDK/CLI saw a CI variable.",
    BOT="A crawler or bot, by its user agent.",
    HUMAN="A person at a terminal, as the SDK/CLI declares.",
    UNKNOWN="Nothing said which (curl, scripts, and every download before kinds existed).",
)


DownloadStatus = documents.DownloadStatus
graphql_enum(
    DownloadStatus,
    "Where a download is: ISSUED → IN_PROGRESS → COMPLETED | ABORTED | FAILED.",
    ISSUED="A URL was handed out; no byte has flowed yet.",
    IN_PROGRESS="Bytes are flowing.",
    COMPLETED="Every byte asked for was sent (which, for a Range fetch, is not the whole object: see "
    "`completesDownload`).",
    ABORTED="The client went away (or its server died).",
    FAILED="The store failed; `failureReason` says how.",
)


@strawberry.type(
    description="One download request of one model version. Counting rule: a download is *completed* once "
    "the whole object has reached its requester, in one request or across a chain of resumed requests "
    "(`requestDownload(input: {resumes: ...})`); only the event that delivers the final byte of a chain "
    "starting at byte 0 has `completesDownload: true`, and only those events count in `downloadCount`, "
    "the COMPLETED figure of `downloadStats` and the rollups. Partial fetches (a Range peek, the first "
    "leg of a resumed download) stay listed here with their byte range."
)
class DownloadEvent(Node):
    page_words: ClassVar[PageWords] = PageWords(
        page="A page of download events.",
        edge="One download event and its cursor.",
        one="The event.",
        many="events",
        total="Events matching the filter, across all pages (counted only when asked for).",
    )

    model_name: str = strawberry.field(description="The model's name.")
    version: int = strawberry.field(
        description="The version number downloaded (an alias is resolved at issue)."
    )
    project_name: str = strawberry.field(description="The model's project.")
    size_bytes: Long = strawberry.field(description="The artifact's size.")
    engineer: str = strawberry.field(description="Who downloaded.")
    requested_alias: str | None = strawberry.field(
        description="The alias the download asked for (e.g. `prod`), when it asked by alias; `version` is "
        "what the alias pointed at then."
    )
    mode: DownloadMode = strawberry.field(description="STREAM or PRESIGNED.")
    client_kind: ClientKind = strawberry.field(
        description="Who the download is for (CI, BOT, HUMAN, UNKNOWN)."
    )
    client_kind_rule: str | None = strawberry.field(
        description="The rule that decided `clientKind`: token, header, user-agent or default."
    )
    client_version: str | None = strawberry.field(
        description="The SDK release from the user agent (`modelhub-sdk/<version>`), null for other clients."
    )
    status: DownloadStatus = strawberry.field(description="Where the download is.")
    sha256_matches: bool | None = strawberry.field(
        description="The client's verdict on the SHA-256 of what it received (null: not reported)."
    )
    bytes_sent: Long = strawberry.field(description="Bytes sent so far (STREAM).")
    range_start: Long | None = strawberry.field(description="First byte asked for with Range, if any.")
    range_end: Long | None = strawberry.field(
        description="Last byte (inclusive) asked for with Range, if any."
    )
    started_at: datetime = strawberry.field(description="When the download was requested.")
    transfer_started_at: datetime | None = strawberry.field(description="When bytes began to flow (STREAM).")
    finished_at: datetime | None = strawberry.field(description="When it reached its final status.")
    duration_seconds: float | None = strawberry.field(description="From the first byte to the end.")
    expires_at: datetime | None = strawberry.field(description="When the ticket stops working.")
    failure_reason: str | None = strawberry.field(description="Why it FAILED (or was ABORTED by a sweep).")
    completes_download: bool = strawberry.field(
        description="This request delivered the object's last byte and its chain began at byte 0: it is "
        "the one event counted as a completed download."
    )
    version_db_id: strawberry.Private[Any]
    resumes_db_id: strawberry.Private[Any]
    # Personal data: shown to the project's MAINTAINERs and ADMINs only.
    user_agent_value: strawberry.Private[str | None]
    client_address_value: strawberry.Private[str | None]

    @strawberry.field(
        description="The client's User-Agent, if sent; null unless the caller is a MAINTAINER of the "
        "project or an ADMIN (personal data; everyone in header mode)."
    )
    def user_agent(self, info: Info) -> str | None:
        return self.user_agent_value if info.context.scope.sees_personal_data(self.project_name) else None

    @strawberry.field(
        description="The client's address; null unless the caller is a MAINTAINER of the project or an "
        "ADMIN (personal data; everyone in header mode)."
    )
    def client_address(self, info: Info) -> str | None:
        return self.client_address_value if info.context.scope.sees_personal_data(self.project_name) else None

    @strawberry.field(description="The earlier download this one resumes, if any.")
    async def resumes(self) -> strawberry.ID | None:
        return global_id("DownloadEvent", self.resumes_db_id) if self.resumes_db_id else None

    @strawberry.field(description="bytesSent / durationSeconds, once finished.")
    def bytes_per_second(self) -> float | None:
        if not self.duration_seconds:
            return None
        return float(self.bytes_sent) / self.duration_seconds

    @strawberry.field(description="The version downloaded (batched: one lookup per request).")
    async def model_version(self, info: Info) -> ModelVersion | None:
        doc = await info.context.versions_by_id.load(self.version_db_id)
        return ModelVersion.from_doc(doc) if doc else None

    @classmethod
    def from_doc(cls, doc: documents.DownloadEvent) -> DownloadEvent:
        return from_doc(
            cls,
            doc,
            id=global_id("DownloadEvent", doc.id),
            version_db_id=doc.model_id,
            version=doc.model_version,
            user_agent_value=doc.user_agent,
            client_address_value=doc.client_address,
            client_kind=ClientKind(doc.client_kind),
            failure_reason=doc.error,
            completes_download=doc.completes,
            resumes_db_id=doc.resumes,
        )


@strawberry.type(description="Where to fetch the artifact, until `expiresAt`.")
class DownloadTicket:
    url: str = strawberry.field(description="GET this URL (STREAM: once) to receive the bytes.")
    mode: DownloadMode = strawberry.field(description="STREAM or PRESIGNED.")
    expires_at: datetime = strawberry.field(description="When the URL stops working.")
    download: DownloadEvent = strawberry.field(description="The download event this ticket records.")


DownloadEventConnection = CountedConnection[DownloadEvent]


DownloadOrderField = queries.DownloadOrderField
graphql_enum(
    DownloadOrderField,
    "What download events can be ordered by.",
    STARTED_AT="When the download was requested.",
    BYTES_SENT="Bytes sent.",
    DURATION="Duration (lists finished downloads only).",
)


@strawberry.input(description="How to order download events.")
class DownloadOrder(Order[DownloadOrderField]):
    pass


@strawberry.input(
    description="Every given condition must hold; list conditions match any of their values (at most "
    f"{queries.MAX_FILTER_VALUES} values a list: more is INVALID_INPUT naming the list)."
)
class DownloadFilter:
    model_names: list[str] | None = strawberry.field(default=None, description="Any of these models.")
    versions: list[int] | None = strawberry.field(default=None, description="Any of these version numbers.")
    project_names: list[str] | None = strawberry.field(default=None, description="Any of these projects.")
    engineers: list[str] | None = strawberry.field(default=None, description="Downloaded by any of these.")
    statuses: list[DownloadStatus] | None = strawberry.field(
        default=None, description="In any of these statuses."
    )
    modes: list[DownloadMode] | None = strawberry.field(default=None, description="In any of these modes.")
    client_kinds: list[ClientKind] | None = strawberry.field(
        default=None, description="For any of these client kinds."
    )
    since: datetime | None = strawberry.field(default=None, description="startedAt ≥ since.")
    until: datetime | None = strawberry.field(default=None, description="startedAt < until.")
    min_bytes: Long | None = strawberry.field(default=None, description="bytesSent ≥ minBytes.")

    def to_query(self) -> queries.EventQuery:
        return queries.check_lists(
            queries.EventQuery(
                model_names=list(self.model_names or []),
                versions=list(self.versions or []),
                project_names=list(self.project_names or []),
                engineers=list(self.engineers or []),
                statuses=list(self.statuses or []),
                modes=list(self.modes or []),
                client_kinds=list(self.client_kinds or []),
                since=self.since,
                until=self.until,
                min_bytes=self.min_bytes,
            )
        )
