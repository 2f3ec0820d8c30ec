"""The root Query and Mutation types and `build_schema`."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated

import strawberry
from graphql import GraphQLError
from strawberry.extensions import MaxAliasesLimiter, ParserCache, QueryDepthLimiter, ValidationCache
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext

from .. import downloads, registry
from ..analytics import events, stats
from ..queries import DownloadWindow, StatsRequest
from .context import Info
from .downloads import (
    DownloadEventConnection,
    DownloadEventEdge,
    DownloadEventType,
    DownloadFilter,
    DownloadMode,
    DownloadOrder,
    DownloadTicket,
)
from .errors import (
    InvalidInput,
    MaskUnexpectedErrors,
    ModelAlreadyExists,
    ModelArchived,
    ModelNotFound,
    StorageObjectNotFound,
    expected_errors,
    is_unexpected,
    label_error,
)
from .extensions import OperationMetrics
from .scalars import LONG_SCALAR, Long
from .stats import Direction, DownloadDimension, DownloadStatsRow, StatsMetric, StatsOrder, TimeInterval
from .types import (
    ModelConnection,
    ModelEdge,
    ModelFilter,
    ModelOrder,
    ModelType,
    RegisterModelInput,
    page_info,
)

log = logging.getLogger("modelhub.graphql")

RegisterModelResult = Annotated[
    ModelType | ModelAlreadyExists | StorageObjectNotFound | InvalidInput,
    strawberry.union("RegisterModelResult"),
]
ArchiveModelResult = Annotated[
    ModelType | ModelNotFound | InvalidInput, strawberry.union("ArchiveModelResult")
]
RequestDownloadResult = Annotated[
    DownloadTicket | ModelNotFound | ModelArchived | StorageObjectNotFound | InvalidInput,
    strawberry.union("RequestDownloadResult"),
]


@strawberry.type
class Query:
    @strawberry.field(
        description="One version of a model; the newest unarchived one when `version` is omitted."
    )
    async def model(self, name: str, version: int | None = None) -> ModelType | None:
        registry.validate_version(version)
        doc = await registry.get_model(name, version)
        return ModelType.from_doc(doc) if doc else None

    @strawberry.field(description="Registered models, as a Relay connection. `first` is 1..100 (default 20).")
    async def models(
        self,
        filter: ModelFilter | None = None,
        order_by: ModelOrder = ModelOrder.CREATED_AT_DESC,
        first: int = 20,
        after: str | None = None,
        downloads_since: Annotated[
            datetime | None, strawberry.argument(description="Window start for DOWNLOADS_DESC (inclusive).")
        ] = None,
        downloads_until: Annotated[
            datetime | None, strawberry.argument(description="Window end for DOWNLOADS_DESC (exclusive).")
        ] = None,
    ) -> ModelConnection:
        window = DownloadWindow(downloads_since, downloads_until)
        query = (filter or ModelFilter()).to_query()
        page = await registry.list_models(query, ModelOrder(order_by), first, after, window)
        edges = [
            ModelEdge(node=ModelType.from_doc(d), cursor=c, window_downloads=page.window_downloads.get(d.id))
            for d, c in page.items
        ]
        return ModelConnection(edges=edges, page_info=page_info(page), count=page.count)

    @strawberry.field(
        description="Raw download events, newest first by default. `first` is 1..100 (default 20)."
    )
    async def downloads(
        self,
        filter: DownloadFilter | None = None,
        order_by: DownloadOrder = DownloadOrder.STARTED_AT_DESC,
        first: int = 20,
        after: str | None = None,
    ) -> DownloadEventConnection:
        query = (filter or DownloadFilter()).to_query()
        page = await events.list_events(query, DownloadOrder(order_by), first, after)
        edges = [DownloadEventEdge(node=DownloadEventType.from_doc(d), cursor=c) for d, c in page.items]
        return DownloadEventConnection(edges=edges, page_info=page_info(page), count=page.count)

    @strawberry.field(
        description="Download figures grouped by any dimensions and time buckets, ordered by any metric. "
        "`limit` is 1..1000 (default 100); an empty `groupBy` gives one grand-total row."
    )
    async def download_stats(
        self,
        info: Info,
        group_by: list[DownloadDimension],
        filter: DownloadFilter | None = None,
        interval: TimeInterval | None = None,
        time_zone: Annotated[
            str | None, strawberry.argument(description="IANA zone for the buckets, e.g. Europe/Paris.")
        ] = None,
        order_by: StatsOrder | None = None,
        limit: int = 100,
        exact: Annotated[
            bool, strawberry.argument(description="Compute from raw events even where rollups could answer.")
        ] = False,
    ) -> list[DownloadStatsRow]:
        request = StatsRequest(
            query=(filter or DownloadFilter()).to_query(),
            group_by=[DownloadDimension(d) for d in group_by],
            interval=TimeInterval(interval) if interval else None,
            time_zone=time_zone,
            order_by=StatsMetric(order_by.metric) if order_by else None,
            descending=order_by is None or order_by.direction == Direction.DESC,
            limit=limit,
            exact=exact,
        )
        rows = await stats.download_stats(request, info.context.services.settings.max_hour_range_days)
        return [DownloadStatsRow.from_row(row) for row in rows]


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Registers an artifact that already sits in the object store.")
    @expected_errors
    async def register_model(self, info: Info, input: RegisterModelInput) -> RegisterModelResult:
        request = registry.RegisterRequest(
            name=input.name,
            project_name=input.project_name,
            bucket=input.bucket,
            key=input.key,
            owner=info.context.engineer,
            version=input.version,
            description=input.description,
            tags=input.tags,
            metadata=input.metadata,
        )
        return ModelType.from_doc(await registry.register(info.context.services, request))

    @strawberry.mutation(
        description="Hides a version from `models` and `model(name)` and refuses its downloads."
    )
    @expected_errors
    async def archive_model(self, name: str, version: int) -> ArchiveModelResult:
        return ModelType.from_doc(await registry.set_archived(name, version, True))

    @strawberry.mutation(description="Undoes `archiveModel`.")
    @expected_errors
    async def unarchive_model(self, name: str, version: int) -> ArchiveModelResult:
        return ModelType.from_doc(await registry.set_archived(name, version, False))

    @strawberry.mutation(
        description="Issues a download: a signed, expiring URL on this server (STREAM), or presigned S3 URL."
    )
    @expected_errors
    async def request_download(
        self,
        info: Info,
        name: str,
        version: int | None = None,
        mode: DownloadMode = DownloadMode.STREAM,
        expires_in: Annotated[
            int | None, strawberry.argument(description="Seconds the URL stays valid: 1..86400, default 900.")
        ] = None,
    ) -> RequestDownloadResult:
        ctx = info.context
        ticket = await downloads.issue_ticket(
            ctx.services,
            name=name,
            version=version,
            mode=DownloadMode(mode),
            expires_in=expires_in,
            who=ctx.requester,
            base_url=ctx.base_url,
        )
        return DownloadTicket(
            url=ticket.url,
            mode=ticket.mode,
            expires_at=ticket.expires_at,
            download=DownloadEventType.from_doc(ticket.event),
        )


class ModelhubSchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # Errors raised on purpose (bad input, auth) are the client's business; only bugs get a traceback.
        unexpected = [e for e in errors if is_unexpected(e)]
        for error in errors:
            if error not in unexpected:
                label_error(error)  # parse errors reach here without passing the extensions
                log.info("graphql error: %s", error.message)
        if unexpected:
            super().process_errors(unexpected, execution_context)


def build_schema() -> strawberry.Schema:
    return ModelhubSchema(
        query=Query,
        mutation=Mutation,
        config=StrawberryConfig(scalar_map={Long: LONG_SCALAR}),
        extensions=[
            MaskUnexpectedErrors,
            OperationMetrics,
            lambda: ParserCache(maxsize=256),
            lambda: ValidationCache(maxsize=256),
            lambda: QueryDepthLimiter(max_depth=12),
            lambda: MaxAliasesLimiter(max_alias_count=50),
        ],
    )
