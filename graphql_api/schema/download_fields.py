"""The root fields of downloads: `downloads`, `requestDownload` and `reportDownloadVerification`."""

from __future__ import annotations

from typing import Annotated

import strawberry

from .. import downloads, queries
from ..analytics import events, stats
from ..errors import InvalidInput as InvalidId
from .connections import AFTER, BEFORE, FIRST, LAST, page_request
from .context import Info
from .downloads import DownloadEvent, DownloadEventConnection, DownloadFilter, DownloadOrder, DownloadTicket
from .errors import (
    ArtifactChanged,
    ChecksumMismatch,
    ChecksumPending,
    InvalidInput,
    ModelNotFound,
    ModelVersionArchived,
    ModelVersionNotFound,
    ObjectDeleted,
    StorageObjectNotFound,
    mutation,
)
from .inputs import INPUT, ReportDownloadVerificationInput, RequestDownloadInput
from .node import parse_global_id

RequestDownloadResult = Annotated[
    DownloadTicket
    | ModelNotFound
    | ModelVersionNotFound
    | ModelVersionArchived
    | ObjectDeleted
    | StorageObjectNotFound
    | ChecksumMismatch
    | ChecksumPending
    | ArtifactChanged
    | InvalidInput,
    strawberry.union("RequestDownloadResult", description="A ticket, or why the download cannot start."),
]
ReportDownloadVerificationResult = Annotated[
    DownloadEvent | InvalidInput,
    strawberry.union(
        "ReportDownloadVerificationResult", description="The download with its verdict, or why not recorded."
    ),
]


def _event_key(value: str, field: str) -> object:
    """The key of a DownloadEvent's global id; InvalidInput naming `field` for any other id."""
    type_name, key = parse_global_id(value, field)
    if type_name != "DownloadEvent":
        raise InvalidId(field, "is not the id of a download")
    return key


@strawberry.type
class DownloadQueries:
    @strawberry.field(description="Download events, newest first by default.")
    async def downloads(
        self,
        info: Info,
        filter: Annotated[DownloadFilter | None, strawberry.argument(description="Which events.")] = None,
        order_by: Annotated[
            DownloadOrder | None, strawberry.argument(description="Default: STARTED_AT DESC.")
        ] = None,
        first: FIRST = None,
        after: AFTER = None,
        last: LAST = None,
        before: BEFORE = None,
    ) -> DownloadEventConnection:
        query = (filter or DownloadFilter()).to_query()
        order = order_by.to(queries.DownloadOrder) if order_by else queries.DownloadOrder()
        request = page_request(first, after, last, before)
        services = info.context.services
        horizon = stats.retention_horizon(services.settings.event_retention_days)
        page = await events.list_events(info.context.scope, query, order, request, services.volume, horizon)
        return DownloadEventConnection.of(page, DownloadEvent.from_doc)


@strawberry.type
class DownloadMutations:
    @mutation(
        description="Issues a download: a signed, single-use URL on this server (STREAM) or a presigned URL."
    )
    async def request_download(
        self, info: Info, input: Annotated[RequestDownloadInput, INPUT]
    ) -> RequestDownloadResult:
        ctx = info.context
        ticket = await downloads.issue_ticket(
            ctx.services,
            name=input.name,
            version=input.version,
            alias=input.alias,
            mode=input.mode,
            expires_in=input.expires_in,
            who=ctx.requester,
            scope=ctx.scope,
            base_url=ctx.base_url,
            resumes=str(_event_key(input.resumes, "resumes")) if input.resumes else None,
        )
        return DownloadTicket(
            url=ticket.url,
            mode=input.mode,
            expires_at=ticket.expires_at,
            download=DownloadEvent.from_doc(ticket.event),
        )

    @mutation(
        description="Reports whether a download's bytes had the version's SHA-256 (once per download, by "
        "the principal who downloaded): counted as `verified` or `mismatched` in `downloadStats`."
    )
    async def report_download_verification(
        self, info: Info, input: Annotated[ReportDownloadVerificationInput, INPUT]
    ) -> ReportDownloadVerificationResult:
        key = _event_key(input.download, "download")
        ctx = info.context
        done = await downloads.report_verification(ctx.requester, ctx.scope, key, input.sha256_matches)
        return DownloadEvent.from_doc(done)
