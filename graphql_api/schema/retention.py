"""`retentionCandidates`: the versions nobody downloads any more, what `modelhub prune` would archive and
then delete (ADMIN only)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry

from .. import prune
from ..errors import InvalidInput
from .context import Info
from .scalars import Long
from .types import ModelVersion

MAX_CANDIDATES = 1000


@strawberry.type(description="One version that retention rules let go.")
class RetentionCandidate:
    version: ModelVersion = strawberry.field(description="The version (archived already if it is scheduled).")
    size_bytes: Long = strawberry.field(description="Its artifact's size.")
    reclaimable_bytes: Long = strawberry.field(
        description="What deleting it frees: its size, once per object; 0 when another version that stays "
        "points at the same object (kept), or an earlier candidate on the same object counted it."
    )
    last_downloaded_at: datetime | None = strawberry.field(
        description="When a download of it was last asked for (any outcome); null if never."
    )
    delete_after: datetime | None = strawberry.field(
        description="For a version `prune --apply` already archived: when its grace period ends (a download "
        "or an unarchive before then cancels the deletion). Null: not archived yet."
    )


@strawberry.type(
    description="The versions retention rules let go (a list of at most `limit`, by model name and version) "
    "and the totals over all of them."
)
class RetentionCandidates:
    candidates: list[RetentionCandidate] = strawberry.field(description="The first `limit` candidates.")
    total_count: int = strawberry.field(description="Candidates in all.")
    total_bytes: Long = strawberry.field(description="Their artifacts' sizes added up.")
    reclaimable_bytes: Long = strawberry.field(
        description="The bytes deleting all of them frees (shared objects counted once, and only when no "
        "version that stays points at them)."
    )
    not_downloaded_since: datetime = strawberry.field(
        description="The window's start: none of them has a download since."
    )
    grace_days: float = strawberry.field(
        description="Days from archiving to deleting the object (MODELHUB_PRUNE_GRACE_DAYS)."
    )


@strawberry.type
class RetentionQueries:
    @strawberry.field(
        description="Versions nobody has downloaded for `notDownloadedForDays` days (and not registered "
        "within them), never one of a model's `keepLatest` newest unarchived versions, nor (with "
        "`keepAliased`) one an alias points at: what `modelhub prune` archives, then deletes (ADMIN only)."
    )
    async def retention_candidates(
        self,
        info: Info,
        not_downloaded_for_days: Annotated[
            int, strawberry.argument(description="The window without downloads: 1..3650 days.")
        ],
        keep_latest: Annotated[
            int, strawberry.argument(description="Each model's newest unarchived versions kept: at least 1.")
        ] = 1,
        keep_aliased: Annotated[
            bool, strawberry.argument(description="Keep every version an alias points at.")
        ] = True,
        project_names: Annotated[
            list[str] | None, strawberry.argument(description="Only these projects (default: all).")
        ] = None,
        limit: Annotated[int, strawberry.argument(description="How many candidates to list: 1..1000.")] = 100,
    ) -> RetentionCandidates:
        ctx = info.context
        prune.require_pruner(ctx.principal, project_names)
        if not 1 <= limit <= MAX_CANDIDATES:
            raise InvalidInput("limit", f"must be between 1 and {MAX_CANDIDATES}")
        req = prune.RetentionRequest(not_downloaded_for_days, keep_latest, keep_aliased, project_names)
        found = await prune.candidates(ctx.services.settings, req)
        return RetentionCandidates(
            candidates=[
                RetentionCandidate(
                    version=ModelVersion.from_doc(c.version),
                    size_bytes=c.version.size_bytes,
                    reclaimable_bytes=c.reclaimable_bytes,
                    last_downloaded_at=c.last_downloaded_at,
                    delete_after=c.delete_after,
                )
                for c in found.candidates[:limit]
            ],
            total_count=len(found.candidates),
            total_bytes=found.total_bytes,
            reclaimable_bytes=found.reclaimable_bytes,
            not_downloaded_since=found.not_downloaded_since,
            grace_days=found.grace_days,
        )
