"""Usage-driven clean-up: which versions nobody downloads any more, archiving them, and deleting their
objects after a grace period, leaving tombstones."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from .auth import Principal
from .config import Settings
from .db import events as events_db
from .db import models as models_db
from .documents import ModelVersion, utcnow
from .errors import Forbidden, InvalidInput
from .queries import check_lists
from .roles import ProjectRole, Role
from .scope import has_role
from .storage import ObjectStore

log = logging.getLogger("modelhub.prune")

MAX_DAYS = 3650
MAX_KEEP_LATEST = 1000


def can_prune(who: Principal, project_name: str | None = None) -> bool:
    """Who may list and prune versions (of `project_name`, or of every project): the one place this is
    decided. An ADMIN anywhere; a project's MAINTAINER in that project."""
    if who.role is Role.ADMIN:
        return True
    return project_name is not None and has_role(who, project_name, ProjectRole.MAINTAINER)


def require_pruner(who: Principal, project_names: list[str] | None) -> None:
    projects: list[str | None] = list(project_names) if project_names else [None]
    for project in projects:
        if not can_prune(who, project):
            raise Forbidden(
                "pruning needs the ADMIN role, or MAINTAINER of every project named (`projects`); "
                f"{who.engineer} has neither"
            )


@dataclass(frozen=True)
class RetentionRequest:
    """Which versions may go: not downloaded for `not_downloaded_for_days` (nor registered within them),
    not among each model's `keep_latest` newest unarchived versions, not aliased (with `keep_aliased`)."""

    not_downloaded_for_days: int
    keep_latest: int = 1
    keep_aliased: bool = True
    project_names: list[str] | None = None

    def validate(self) -> None:
        check_lists(self, prefix="")
        if not 1 <= self.not_downloaded_for_days <= MAX_DAYS:
            raise InvalidInput("notDownloadedForDays", f"must be between 1 and {MAX_DAYS}")
        if not 1 <= self.keep_latest <= MAX_KEEP_LATEST:
            raise InvalidInput(
                "keepLatest", f"must be between 1 and {MAX_KEEP_LATEST}: the latest is never pruned"
            )


@dataclass
class Candidate:
    version: ModelVersion
    last_downloaded_at: datetime | None
    # The bytes deleting it frees: its size once per object, 0 for an object another version (not a
    # candidate itself) still points at, or that an earlier candidate already counted.
    reclaimable_bytes: int
    # When its object goes, for one already archived by an earlier `prune --apply`.
    delete_after: datetime | None = None


@dataclass
class Retention:
    candidates: list[Candidate]
    not_downloaded_since: datetime
    grace_days: float

    @property
    def total_bytes(self) -> int:
        return sum(c.version.size_bytes for c in self.candidates)

    @property
    def reclaimable_bytes(self) -> int:
        return sum(c.reclaimable_bytes for c in self.candidates)


def may_delete(settings: Settings, bucket: str, key: str) -> bool:
    """Only objects the server put there itself (under its upload prefix) or in the storage models may be
    registered from (MODELHUB_ALLOWED_STORAGE) are ever deleted."""
    prefix = settings.upload_prefix.strip("/")
    if bucket == settings.upload_bucket and (not prefix or key.startswith(prefix + "/")):
        return True
    return settings.storage_scope.permits(bucket, key)


def _grace(settings: Settings) -> timedelta:
    return timedelta(days=settings.prune_grace_days)


async def candidates(settings: Settings, req: RetentionRequest, now: datetime | None = None) -> Retention:
    """The versions `req` lets go, by model and version, with their bytes."""
    req.validate()
    now = now or utcnow()
    cutoff = now - timedelta(days=req.not_downloaded_for_days)
    versions = await models_db.live_versions(req.project_names)
    kept: set[Any] = set()
    by_model: dict[str, list[ModelVersion]] = {}
    for v in versions:
        if not v.archived:
            by_model.setdefault(v.name, []).append(v)
    for group in by_model.values():
        group.sort(key=lambda v: v.version, reverse=True)
        kept.update(v.id for v in group[: req.keep_latest])
    aliased: set[tuple[str, int]] = set()
    if req.keep_aliased:
        models = await models_db.find_models(sorted({v.name for v in versions}))
        aliased = {(m.name, n) for m in models.values() for n in m.aliases.values()}
    recent = await events_db.versions_downloaded_since(cutoff, req.project_names)
    chosen = [
        v
        for v in versions
        if (not v.archived or v.prune_marked_at is not None)  # versions archived by hand are their owners'
        and v.id not in kept
        and (v.name, v.version) not in aliased
        and v.id not in recent
        and _utc(v.created_at) < cutoff
        and may_delete(settings, v.bucket, v.key)
    ]
    chosen.sort(key=lambda v: (v.name, v.version))
    last = await events_db.last_download_of([v.id for v in chosen])
    refs = await models_db.object_references([(v.bucket, v.key) for v in chosen])
    ids = {v.id for v in chosen}
    counted: set[tuple[str, str]] = set()
    found = []
    for v in chosen:
        where = (v.bucket, v.key)
        frees = refs.get(where, set()) <= ids and where not in counted
        counted.add(where)
        due = _utc(v.prune_marked_at) + _grace(settings) if v.prune_marked_at else None
        found.append(Candidate(v, last.get(v.id), v.size_bytes if frees else 0, due))
    return Retention(found, cutoff, settings.prune_grace_days)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


class Outcome(StrEnum):
    ARCHIVED = "ARCHIVED"  # archived now; its object goes after the grace period
    DELETED = "DELETED"  # its object deleted: a tombstone now
    TOMBSTONED = "TOMBSTONED"  # a tombstone, its object kept: another version still points at it
    CANCELLED = "CANCELLED"  # downloaded during its grace period: given back, unarchived
    SKIPPED = "SKIPPED"  # unarchived (or archived by hand) meanwhile, or no longer deletable: left alone


@dataclass
class Step:
    outcome: Outcome
    version: ModelVersion
    freed_bytes: int = 0


@dataclass
class PruneReport:
    steps: list[Step] = field(default_factory=list)

    def count(self, outcome: Outcome) -> int:
        return sum(1 for s in self.steps if s.outcome is outcome)

    @property
    def freed_bytes(self) -> int:
        return sum(s.freed_bytes for s in self.steps)


async def apply(
    settings: Settings,
    store: ObjectStore,
    who: Principal,
    req: RetentionRequest,
    on_step: Callable[[Step], None] | None = None,
) -> PruneReport:
    """Archives today's candidates (their grace period starts), then deletes the objects of the versions
    whose grace period is over, finishing any deletion a crashed run left half done. Safe to rerun at any
    point: every step is a compare-and-set on the version's state; deleting a deleted object is a no-op."""
    require_pruner(who, req.project_names)
    report = PruneReport()

    def done(step: Step) -> None:
        report.steps.append(step)
        if on_step is not None:
            on_step(step)

    now = utcnow()
    for c in (await candidates(settings, req, now)).candidates:
        if c.version.prune_marked_at is None and await models_db.mark_for_prune(c.version.id, now):
            done(Step(Outcome.ARCHIVED, c.version))
    due = await models_db.prune_due(utcnow() - _grace(settings), req.project_names)
    for version in due:
        step = await _delete(settings, store, version)
        if step is not None:
            done(step)
    return report


async def _delete(settings: Settings, store: ObjectStore, v: ModelVersion) -> Step | None:
    """One version past its grace period: cancelled if it was downloaded since it was marked, else its
    object deleted (unless another live version shares it) and the version made a tombstone."""
    if not v.object_deleting:
        if v.prune_marked_at is None:  # prune_due reads only marked ones; unmarked since: left alone
            return Step(Outcome.SKIPPED, v)
        if not may_delete(settings, v.bucket, v.key):
            await models_db.cancel_prune(v.id)
            return Step(Outcome.SKIPPED, v)
        if await events_db.downloaded_since(v.id, v.prune_marked_at):
            await models_db.cancel_prune(v.id)
            return Step(Outcome.CANCELLED, v)
        if not await models_db.begin_deletion(v.id, v.prune_marked_at):
            return Step(Outcome.SKIPPED, v)  # unarchived or archived by hand since: its owner decided
        # A download that was being issued as the deletion was decided: the version is given back. Those
        # issued from now on are refused (ObjectDeleted), so none can start on an object about to go.
        if await events_db.downloaded_since(v.id, v.prune_marked_at):
            await models_db.cancel_prune(v.id)
            return Step(Outcome.CANCELLED, v)
    shared = await models_db.other_live_references(v.bucket, v.key, v.id)
    if not shared:
        await store.delete_object(v.bucket, v.key)
        if settings.prune_pause_seconds:  # paces the deletions (a crash here is resumed by the next run)
            await asyncio.sleep(settings.prune_pause_seconds)
    if not await models_db.finish_deletion(v.id, utcnow()):
        return None  # another run finished it
    log.info("pruned %s version %d (object %s)", v.name, v.version, "kept: shared" if shared else "deleted")
    return Step(Outcome.TOMBSTONED if shared else Outcome.DELETED, v, 0 if shared else v.size_bytes)
