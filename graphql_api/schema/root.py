"""The root Query and Mutation types."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any

import strawberry

from .. import aliases, documents, downloads, queries, registry, uploads, webhooks
from ..analytics import events, series, stats
from ..errors import InvalidInput as InvalidIds
from ..queries import DownloadWindow
from ..scope import Scope
from .audit import AuditQueries
from .context import Info
from .downloads import (
    DownloadEvent,
    DownloadEventConnection,
    DownloadEventEdge,
    DownloadFilter,
    DownloadOrder,
    DownloadTicket,
)
from .errors import (
    AliasNotFound,
    ArtifactChanged,
    ChecksumMismatch,
    ChecksumPending,
    InvalidInput,
    ModelNotFound,
    ModelVersionAlreadyExists,
    ModelVersionArchived,
    ModelVersionNotFound,
    ObjectDeleted,
    StorageObjectNotFound,
    UploadNotFound,
    expected_errors,
)
from .inputs import (
    CompleteUploadInput,
    ModelVersionInput,
    RegisterModelInput,
    RemoveAliasInput,
    RequestDownloadInput,
    RequestUploadInput,
    SetAliasInput,
    UpdateModelInput,
    UpdateModelVersionInput,
)
from .node import Node, parse_global_id
from .operations import OperationMutations
from .projects import ProjectMutations, ProjectQueries
from .retention import RetentionQueries
from .stats import (
    DownloadDimension,
    DownloadSeriesResult,
    DownloadStatsResult,
    SeriesMetric,
    StatsOrder,
    TimeInterval,
    stats_request,
)
from .tokens import TokenMutations, TokenQueries
from .types import (
    AFTER,
    BEFORE,
    FIRST,
    LAST,
    AliasChange,
    Model,
    ModelConnection,
    ModelEdge,
    ModelFilter,
    ModelOrder,
    ModelVersion,
    page_info,
    page_request,
)
from .uploads import UploadTicket
from .webhooks import Webhook, WebhookMutations, WebhookQueries

log = logging.getLogger("modelhub.graphql")
INPUT = strawberry.argument(description="What to do; see the input type.")

RegisterModelResult = Annotated[
    ModelVersion | ModelVersionAlreadyExists | StorageObjectNotFound | ChecksumMismatch | InvalidInput,
    strawberry.union("RegisterModelResult", description="The new version, or why it was not registered."),
]
UpdateModelResult = Annotated[
    Model | ModelNotFound | InvalidInput,
    strawberry.union("UpdateModelResult", description="The changed model, or why it was not changed."),
]
ModelVersionResult = Annotated[
    ModelVersion | ModelNotFound | ModelVersionNotFound | ObjectDeleted | InvalidInput,
    strawberry.union("ModelVersionResult", description="The changed version, or why it was not changed."),
]
SetAliasResult = Annotated[
    Model | ModelNotFound | ModelVersionNotFound | ModelVersionArchived | InvalidInput,
    strawberry.union(
        "SetAliasResult", description="The model with its aliases, or why the alias did not move."
    ),
]
RemoveAliasResult = Annotated[
    Model | ModelNotFound | AliasNotFound | InvalidInput,
    strawberry.union(
        "RemoveAliasResult", description="The model with its aliases, or why nothing was removed."
    ),
]
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


def _new_version(input: RegisterModelInput | RequestUploadInput, info: Info) -> dict[str, Any]:
    """The `registry.VersionRequest` fields both ways of adding a version share, the caller as owner."""
    return {
        "name": input.name,
        "project_name": input.project_name,
        "owner": info.context.principal.engineer,
        "version": input.version,
        "description": input.description,
        "tags": input.tags,
        "metadata": input.metadata,
        "sha256": input.sha256,
    }


def _event_key(value: str) -> object:
    type_name, key = parse_global_id(value, "resumes")
    if type_name != "DownloadEvent":
        raise InvalidIds("resumes", "is not the id of a download")
    return key


RequestUploadResult = Annotated[
    UploadTicket | ModelVersionAlreadyExists | ModelNotFound | InvalidInput,
    strawberry.union("RequestUploadResult", description="Where to PUT the bytes, or why not."),
]
CompleteUploadResult = Annotated[
    ModelVersion
    | UploadNotFound
    | ChecksumMismatch
    | ModelVersionAlreadyExists
    | StorageObjectNotFound
    | InvalidInput,
    strawberry.union(
        "CompleteUploadResult",
        description="The registered version, or why not (`StorageObjectNotFound`: the bytes never arrived).",
    ),
]


async def _node(scope: Scope, id: str) -> Node | None:
    """The object, or None when it does not exist or `scope` may not read its project (the same answer)."""
    type_name, key = parse_global_id(id)
    if type_name == "Model":
        model = await registry.model_by_id(scope, key)
        return Model.from_doc(model) if model else None
    if type_name == "ModelVersion":
        version = await registry.version_by_id(scope, key)
        return ModelVersion.from_doc(version) if version else None
    if type_name == "DownloadEvent":
        event = await events.event_by_id(scope, key)
        return DownloadEvent.from_doc(event) if event else None
    if type_name == "AliasChange":
        change = await aliases.change_by_id(scope, key)
        return AliasChange.from_doc(change) if change else None
    if type_name == "Webhook":
        hook = await webhooks.visible(scope.principal, key)
        return Webhook.from_doc(hook) if hook else None
    return None


@strawberry.type(description="Everything that can be read.")
class Query(TokenQueries, ProjectQueries, AuditQueries, WebhookQueries, RetentionQueries):
    @strawberry.field(description="Any object by its global id (Relay), or null.")
    async def node(
        self, info: Info, id: Annotated[strawberry.ID, strawberry.argument(description="A global id.")]
    ) -> Node | None:
        return await _node(info.context.scope, id)

    @strawberry.field(description="Objects by their global ids, in order; null where one does not exist.")
    async def nodes(
        self,
        info: Info,
        ids: Annotated[list[strawberry.ID], strawberry.argument(description="Up to 100 global ids.")],
    ) -> list[Node | None]:
        if len(ids) > 100:
            raise InvalidIds("ids", "at most 100 ids")
        return [await _node(info.context.scope, i) for i in ids]

    @strawberry.field(description="A model by name, or null.")
    async def model(
        self, info: Info, name: Annotated[str, strawberry.argument(description="The model name.")]
    ) -> Model | None:
        doc = await registry.get_model(info.context.scope, name, info.context.model_cache)
        return Model.from_doc(doc) if doc else None

    @strawberry.field(
        description="One version by number or alias (give at most one), or the newest unarchived one; "
        "null if there is none. With `at`, the alias as it stood then (from the alias history): null "
        "before it was first set or while it was removed."
    )
    async def model_version(
        self,
        info: Info,
        name: Annotated[str, strawberry.argument(description="The model name.")],
        version: Annotated[int | None, strawberry.argument(description="A version number.")] = None,
        alias: Annotated[str | None, strawberry.argument(description="An alias, e.g. `prod`.")] = None,
        at: Annotated[
            datetime | None,
            strawberry.argument(description="Resolve `alias` as it stood at this time (needs `alias`)."),
        ] = None,
    ) -> ModelVersion | None:
        scope = info.context.scope
        if at is not None:
            doc = await aliases.find_version_at(scope, name, version, alias, at)
        else:
            doc = await registry.find_version(scope, name, version, alias)
        return ModelVersion.from_doc(doc) if doc else None

    @strawberry.field(description="Models (one per name), newest first by default.")
    async def models(
        self,
        info: Info,
        filter: Annotated[ModelFilter | None, strawberry.argument(description="Which models.")] = None,
        order_by: Annotated[
            ModelOrder | None, strawberry.argument(description="Default: CREATED_AT DESC.")
        ] = None,
        first: FIRST = None,
        after: AFTER = None,
        last: LAST = None,
        before: BEFORE = None,
        downloads_since: Annotated[
            datetime | None, strawberry.argument(description="Window start for DOWNLOADS (inclusive).")
        ] = None,
        downloads_until: Annotated[
            datetime | None, strawberry.argument(description="Window end for DOWNLOADS (exclusive).")
        ] = None,
    ) -> ModelConnection:
        window = DownloadWindow(downloads_since, downloads_until)
        query = (filter or ModelFilter()).to_query()
        order = order_by.to_order() if order_by else queries.ModelOrder()
        request = page_request(first, after, last, before)
        ctx = info.context
        page = await registry.list_models(ctx.scope, query, order, request, window, ctx.model_cache)
        edges = [
            ModelEdge(node=Model.from_doc(d), cursor=c, window_downloads=page.window_downloads.get(d.id))
            for d, c in page.items
        ]
        return ModelConnection(edges=edges, page_info=page_info(page), count=page.count)

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
        order = order_by.to_order() if order_by else queries.DownloadOrder()
        request = page_request(first, after, last, before)
        page = await events.list_events(info.context.scope, query, order, request)
        edges = [DownloadEventEdge(node=DownloadEvent.from_doc(d), cursor=c) for d, c in page.items]
        return DownloadEventConnection(edges=edges, page_info=page_info(page), count=page.count)

    @strawberry.field(
        description="Download figures grouped by any dimensions and time buckets, ordered by any metric, a "
        "page of `limit` (1..1000, default 100) rows at a time. An empty `groupBy` gives one grand-total row."
    )
    async def download_stats(
        self,
        info: Info,
        group_by: Annotated[
            list[DownloadDimension], strawberry.argument(description="Dimensions to group by.")
        ],
        filter: Annotated[
            DownloadFilter | None, strawberry.argument(description="Which events count.")
        ] = None,
        interval: Annotated[
            TimeInterval | None, strawberry.argument(description="Time buckets, if any.")
        ] = None,
        time_zone: Annotated[
            str | None, strawberry.argument(description="IANA zone for the buckets, e.g. Europe/Paris.")
        ] = None,
        order_by: Annotated[
            StatsOrder | None, strawberry.argument(description="Default: DOWNLOADS DESC.")
        ] = None,
        limit: Annotated[int, strawberry.argument(description="Rows per page: 1..1000.")] = 100,
        after: Annotated[
            str | None, strawberry.argument(description="`pageInfo.endCursor` of the last page.")
        ] = None,
        exact: Annotated[
            bool, strawberry.argument(description="Compute from raw events even where rollups could answer.")
        ] = False,
    ) -> DownloadStatsResult:
        query = (filter or DownloadFilter()).to_query()
        request = stats_request(group_by, query, interval, time_zone, order_by, limit, exact, after)
        ctx = info.context
        settings = ctx.services.settings
        horizon = stats.retention_horizon(settings.event_retention_days)
        page = await stats.download_stats(ctx.scope, request, settings.max_hour_range_days, horizon=horizon)
        return DownloadStatsResult.from_page(page)

    @strawberry.field(
        description="Chart-ready download series over [since, until): one series per group of `by` with a "
        "point per `interval` bucket (zero-filled), the `top` groups by `metric` largest first, and an "
        "`other` series summing the rest. Counts follow the same rules as `downloadStats`."
    )
    async def download_series(
        self,
        info: Info,
        by: Annotated[
            DownloadDimension, strawberry.argument(description="The dimension that splits series.")
        ],
        since: Annotated[datetime, strawberry.argument(description="Start of the range (inclusive).")],
        until: Annotated[datetime, strawberry.argument(description="End of the range (exclusive).")],
        interval: Annotated[
            TimeInterval, strawberry.argument(description="The bucket size.")
        ] = TimeInterval.DAY,
        metric: Annotated[
            SeriesMetric, strawberry.argument(description="What to plot.")
        ] = SeriesMetric.COMPLETED,
        filter: Annotated[
            DownloadFilter | None,
            strawberry.argument(description="Which events count (its since/until must be unset)."),
        ] = None,
        top: Annotated[int, strawberry.argument(description="How many groups get a series: 1..50.")] = 10,
        time_zone: Annotated[
            str | None, strawberry.argument(description="IANA zone for the buckets, e.g. Europe/Paris.")
        ] = None,
    ) -> DownloadSeriesResult:
        request = series.SeriesRequest(
            by=queries.Dimension(by.name),
            metric=series.SeriesMetric(metric.name),
            interval=queries.Interval(interval.name),
            since=since,
            until=until,
            query=(filter or DownloadFilter()).to_query(),
            top=top,
            time_zone=time_zone,
        )
        ctx = info.context
        settings = ctx.services.settings
        horizon = stats.retention_horizon(settings.event_retention_days)
        found = await series.download_series(
            ctx.scope, request, settings.max_hour_range_days, horizon=horizon
        )
        return DownloadSeriesResult.from_result(found)


@strawberry.input(description="A client's verdict on the SHA-256 of a download it received.")
class ReportDownloadVerificationInput:
    download: strawberry.ID = strawberry.field(description="The download (its DownloadEvent id).")
    sha256_matches: bool = strawberry.field(description="Whether the bytes' SHA-256 equals the version's.")


ReportDownloadVerificationResult = Annotated[
    DownloadEvent | InvalidInput,
    strawberry.union(
        "ReportDownloadVerificationResult", description="The download with its verdict, or why not recorded."
    ),
]


@strawberry.type(
    description="Everything that changes state; each takes one `input` and returns a result union."
)
class Mutation(TokenMutations, OperationMutations, ProjectMutations, WebhookMutations):
    @strawberry.mutation(
        description="Registers a new version of a model from an artifact already in the object store; the "
        "first version creates the model. Only the model's owner adds versions."
    )
    @expected_errors
    async def register_model(
        self, info: Info, input: Annotated[RegisterModelInput, INPUT]
    ) -> RegisterModelResult:
        request = registry.RegisterRequest(**_new_version(input, info), bucket=input.bucket, key=input.key)
        ctx = info.context
        return ModelVersion.from_doc(await registry.register(ctx.services, request, ctx.principal, ctx.scope))

    @strawberry.mutation(description="Changes a model's description and tags (owner only).")
    @expected_errors
    async def update_model(self, info: Info, input: Annotated[UpdateModelInput, INPUT]) -> UpdateModelResult:
        ctx = info.context
        model = await registry.update_model(
            ctx.scope, input.name, ctx.principal, input.description, input.tags
        )
        return Model.from_doc(model)

    @strawberry.mutation(description="Changes a version's description, tags and metadata (owner only).")
    @expected_errors
    async def update_model_version(
        self, info: Info, input: Annotated[UpdateModelVersionInput, INPUT]
    ) -> ModelVersionResult:
        doc = await registry.update_version(
            info.context.scope,
            input.name,
            input.version,
            info.context.principal,
            input.description,
            input.tags,
            input.metadata,
        )
        return ModelVersion.from_doc(doc)

    @strawberry.mutation(
        description="Archives a version: hidden by default, downloads refused, history and stats kept "
        "(owner only)."
    )
    @expected_errors
    async def archive_model_version(
        self, info: Info, input: Annotated[ModelVersionInput, INPUT]
    ) -> ModelVersionResult:
        ctx = info.context
        doc = await registry.set_archived(ctx.scope, input.name, input.version, ctx.principal, True)
        return ModelVersion.from_doc(doc)

    @strawberry.mutation(description="Undoes `archiveModelVersion` (owner only).")
    @expected_errors
    async def unarchive_model_version(
        self, info: Info, input: Annotated[ModelVersionInput, INPUT]
    ) -> ModelVersionResult:
        ctx = info.context
        doc = await registry.set_archived(ctx.scope, input.name, input.version, ctx.principal, False)
        return ModelVersion.from_doc(doc)

    @strawberry.mutation(description="Points an alias at a version; the move is recorded (owner only).")
    @expected_errors
    async def set_alias(self, info: Info, input: Annotated[SetAliasInput, INPUT]) -> SetAliasResult:
        ctx = info.context
        model = await aliases.set_alias(ctx.scope, input.name, input.alias, input.version, ctx.principal)
        return Model.from_doc(model)

    @strawberry.mutation(description="Removes an alias; the removal is recorded (owner only).")
    @expected_errors
    async def remove_alias(self, info: Info, input: Annotated[RemoveAliasInput, INPUT]) -> RemoveAliasResult:
        ctx = info.context
        return Model.from_doc(await aliases.remove_alias(ctx.scope, input.name, input.alias, ctx.principal))

    @strawberry.mutation(
        description="Issues a download: a signed, single-use URL on this server (STREAM) or a presigned URL."
    )
    @expected_errors
    async def request_download(
        self, info: Info, input: Annotated[RequestDownloadInput, INPUT]
    ) -> RequestDownloadResult:
        ctx = info.context
        ticket = await downloads.issue_ticket(
            ctx.services,
            name=input.name,
            version=input.version,
            alias=input.alias,
            mode=documents.DownloadMode(input.mode.name),
            expires_in=input.expires_in,
            who=ctx.requester,
            scope=ctx.scope,
            base_url=ctx.base_url,
            resumes=str(_event_key(input.resumes)) if input.resumes else None,
        )
        return DownloadTicket(
            url=ticket.url,
            mode=input.mode,
            expires_at=ticket.expires_at,
            download=DownloadEvent.from_doc(ticket.event),
        )

    @strawberry.mutation(
        description="Reports whether a download's bytes had the version's SHA-256 (once per download, by "
        "the principal who downloaded): counted as `verified` or `mismatched` in `downloadStats`."
    )
    @expected_errors
    async def report_download_verification(
        self, info: Info, input: Annotated[ReportDownloadVerificationInput, INPUT]
    ) -> ReportDownloadVerificationResult:
        type_name, key = parse_global_id(input.download, "download")
        if type_name != "DownloadEvent":
            raise InvalidIds("download", "is not the id of a download")
        ctx = info.context
        done = await downloads.report_verification(ctx.requester, ctx.scope, key, input.sha256_matches)
        return DownloadEvent.from_doc(done)

    @strawberry.mutation(
        description="Starts an upload of a new version's artifact into the server's own bucket: presigned "
        "PUT URLs (one, or one per part above the multipart threshold) on S3, or an app URL on the local "
        "store. The bytes are checked against `sizeBytes` and `sha256`; `completeUpload` then registers "
        "the version."
    )
    @expected_errors
    async def request_upload(
        self, info: Info, input: Annotated[RequestUploadInput, INPUT]
    ) -> RequestUploadResult:
        request = uploads.UploadRequest(
            **_new_version(input, info),
            size_bytes=input.size_bytes,
            filename=input.filename,
            content_type=input.content_type,
        )
        ctx = info.context
        return UploadTicket.of(
            await uploads.request_upload(ctx.services, request, ctx.principal, ctx.scope, ctx.base_url)
        )

    @strawberry.mutation(
        description="Finishes an upload: assembles multipart parts, checks size and checksum, and registers "
        "the version (`checksumStatus` VERIFIED at once where the store vouches for the SHA-256, else "
        "PENDING until the server has hashed it). Completing the same upload again returns the same version."
    )
    @expected_errors
    async def complete_upload(
        self, info: Info, input: Annotated[CompleteUploadInput, INPUT]
    ) -> CompleteUploadResult:
        ctx = info.context
        version = await uploads.complete_upload(
            ctx.services, input.upload_id, input.part_etags, ctx.principal, ctx.scope
        )
        return ModelVersion.from_doc(version)
