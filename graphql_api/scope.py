"""What one request may see and do across projects: a `Scope` (read once per request from the caller's
principal and the projects' visibility and grants) that every read of models, versions, events and figures
takes, and the `ProjectDirectory` that builds it from a cached snapshot of the `projects` collection.

A principal's effective grants are its own (a token's, or a sign-on's) with the project-side grants to its
name over them (the higher role wins). The snapshot is cached for the token cache's lifetime
(`MODELHUB_TOKEN_CACHE_SECONDS`): a grant or visibility change made through this instance drops it at once,
another instance sees it within that lifetime. A project created on another instance is unseen here by a
caller without a global role until then too (it fails closed: invisible, never visible by mistake).

The scope is applied where each read enters the use cases (registry, aliases, analytics, downloads,
uploads, the feed): each of those functions takes the `Scope` as a required argument, and what it hands the
collection owners (db/, the catalogue) is a filter already narrowed to the readable projects, or nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .auth import Principal
from .db import projects as projects_db
from .documents import Project, ProjectVisibility
from .queries import EventQuery, ModelQuery
from .roles import PROJECT_RANK, ProjectRole, Role

# A global role's standing in every project.
GLOBAL_AS_PROJECT = {
    Role.READER: ProjectRole.READER,
    Role.ENGINEER: ProjectRole.ENGINEER,
    Role.ADMIN: ProjectRole.MAINTAINER,
}


def project_role(principal: Principal | None, project: str) -> ProjectRole | None:
    """The caller's effective role in `project`: its grant there or its global role, whichever is higher."""
    if principal is None:
        return None
    granted = principal.grants.get(project)
    overall = GLOBAL_AS_PROJECT[principal.role] if principal.role is not None else None
    held = [r for r in (granted, overall) if r is not None]
    return max(held, key=PROJECT_RANK.__getitem__) if held else None


def has_role(principal: Principal | None, project: str, role: ProjectRole) -> bool:
    held = project_role(principal, project)
    return held is not None and PROJECT_RANK[held] >= PROJECT_RANK[role]


@dataclass(frozen=True)
class Scope:
    """The projects one request may read (`readable`; None: every project) and, through its principal,
    write and maintain. Reads narrow their filters with `models`/`events` (None: nothing is visible, so the
    answer is empty without asking the database) or check one object's project with `can_read`."""

    principal: Principal | None
    readable: frozenset[str] | None
    # Header mode (local development: any caller may claim any name) shows personal data to everyone.
    open_personal_data: bool = False

    @classmethod
    def everything(cls, principal: Principal | None) -> Scope:
        return cls(principal, None)

    @classmethod
    def nothing(cls) -> Scope:
        return cls(None, frozenset())

    def can_read(self, project: str) -> bool:
        return self.readable is None or project in self.readable

    def can_write(self, project: str) -> bool:
        return self.can_read(project) and has_role(self.principal, project, ProjectRole.ENGINEER)

    def writable(self) -> frozenset[str] | None:
        """The projects this caller may write (`can_write`): None for every project (a global ENGINEER or
        ADMIN role), else the readable ones it holds ENGINEER or MAINTAINER in (empty for anonymous)."""
        who = self.principal
        if who is None:
            return frozenset()
        overall = GLOBAL_AS_PROJECT[who.role] if who.role is not None else None
        if self.readable is None and overall is not None and overall is not ProjectRole.READER:
            return None
        return frozenset(p for p in who.grants if self.can_write(p))

    def can_maintain(self, project: str) -> bool:
        return self.can_read(project) and has_role(self.principal, project, ProjectRole.MAINTAINER)

    def sees_personal_data(self, project: str) -> bool:
        """Download events' client address and user agent: for the project's MAINTAINERs and ADMINs."""
        return self.open_personal_data or self.can_maintain(project)

    @property
    def is_admin(self) -> bool:
        return self.principal is not None and self.principal.role is Role.ADMIN

    def narrow(self, names: Sequence[str]) -> list[str] | None:
        """The project names a read asked for (empty: any) within this scope, as a filter; None when
        nothing visible remains (an empty filter means "any", so it is never returned for a narrowed one)."""
        if self.readable is None:
            return list(names)
        wanted = [n for n in names if n in self.readable] if names else sorted(self.readable)
        return wanted or None

    def models(self, query: ModelQuery) -> ModelQuery | None:
        projects = self.narrow(query.project_names)
        return None if projects is None else dataclasses.replace(query, project_names=projects)

    def events(self, query: EventQuery) -> EventQuery | None:
        projects = self.narrow(query.project_names)
        return None if projects is None else dataclasses.replace(query, project_names=projects)


@dataclass(frozen=True)
class Snapshot:
    internal: frozenset[str]
    grants: Mapping[str, Mapping[str, ProjectRole]]  # principal -> project -> role
    names: frozenset[str]  # every project (none is ever deleted)


def snapshot_of(projects: Sequence[Project]) -> Snapshot:
    grants: dict[str, dict[str, ProjectRole]] = {}
    for project in projects:
        for g in project.grants:
            mine = grants.setdefault(g.principal, {})
            held = mine.get(project.name)
            if held is None or PROJECT_RANK[g.role] > PROJECT_RANK[held]:
                mine[project.name] = g.role
    internal = frozenset(p.name for p in projects if p.visibility is ProjectVisibility.INTERNAL)
    return Snapshot(internal, grants, frozenset(p.name for p in projects))


class ProjectDirectory:
    """Builds each request's principal (with project-side grants) and `Scope` from a cached snapshot."""

    def __init__(self, cache_seconds: float, header_mode: bool = False) -> None:
        self.cache_seconds = cache_seconds
        self.header_mode = header_mode
        self._snapshot: Snapshot | None = None
        self._until = 0.0
        self._generation = 0
        self._lock = asyncio.Lock()

    def forget(self) -> None:
        """Drops the snapshot (after a grant or visibility change, or a new project, on this instance)."""
        self._generation += 1
        self._snapshot = None

    def known(self, name: str) -> bool:
        """Whether the last snapshot read, even an expired one, holds project `name`: it exists then, since
        projects are never deleted (a registration skips creating it: one write of three)."""
        snap = self._snapshot
        return snap is not None and name in snap.names

    async def snapshot(self) -> Snapshot:
        if self._snapshot is not None and time.monotonic() < self._until:
            return self._snapshot
        async with self._lock:
            if self._snapshot is not None and time.monotonic() < self._until:
                return self._snapshot
            generation = self._generation
            found = snapshot_of(await projects_db.all_projects())
            if generation == self._generation:  # not dropped while it was read: keep it
                self._snapshot, self._until = found, time.monotonic() + self.cache_seconds
            return found

    async def resolve(self, principal: Principal | None) -> tuple[Principal | None, Scope]:
        """The caller with its effective grants, and its scope. Anonymous: nothing. A global role: every
        project. Otherwise INTERNAL projects and those it holds a role in."""
        if principal is None:
            return None, Scope.nothing()
        snap = await self.snapshot()
        extra = snap.grants.get(principal.engineer)
        if extra:
            merged = dict(principal.grants)
            for project, role in extra.items():
                held = merged.get(project)
                if held is None or PROJECT_RANK[role] > PROJECT_RANK[held]:
                    merged[project] = role
            principal = dataclasses.replace(principal, grants=merged)
        if principal.role is not None:
            return principal, Scope(principal, None, self.header_mode)
        return principal, Scope(principal, snap.internal | frozenset(principal.grants), self.header_mode)
