"""Who may do what, and what they did: tokens, projects and their grants, persisted operations, audit."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from beanie import Document
from pydantic import BaseModel, Field
from pymongo import ASCENDING, DESCENDING, IndexModel

from ..roles import PROJECT_RANK, ProjectRole, Role
from .common import utcnow
from .downloads import ClientKind


class TokenGrant(BaseModel):
    """A token's role in one project."""

    project: str
    role: ProjectRole


class ApiToken(Document):
    """A bearer token, kept only as its SHA-256: the token itself is shown once, when it is created."""

    name: str
    principal: str
    # The global role (None: only `grants`); tokens made before grants existed keep theirs (see roles.py).
    role: Role | None = None
    # Its roles in single projects, on top of the project-side grants to `principal`. A list, not a
    # mapping: a project name may hold a dot, which a document key should not.
    grants: list[TokenGrant] = Field(default_factory=list)
    token_hash: str
    created_by: str
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None
    # The client kind every download with this token is recorded as (`--kind ci`); None: decided per request.
    client_kind: ClientKind | None = None

    def grant_map(self) -> dict[str, ProjectRole]:
        """Project -> role (the highest, should a project be listed twice)."""
        found: dict[str, ProjectRole] = {}
        for g in self.grants:
            if g.project not in found or PROJECT_RANK[g.role] > PROJECT_RANK[found[g.project]]:
                found[g.project] = g.role
        return found

    class Settings:
        name = "api_tokens"
        indexes = [
            IndexModel([("token_hash", ASCENDING)], unique=True, name="token_hash_unique"),
            IndexModel([("name", ASCENDING)], unique=True, name="name_unique"),
        ]


class ProjectVisibility(StrEnum):
    """INTERNAL: every authenticated principal may read the project; PRIVATE: its grantees only."""

    INTERNAL = "INTERNAL"
    PRIVATE = "PRIVATE"


class ProjectGrant(BaseModel):
    """A role in a project given to a principal by name (whatever token or sign-on it comes with)."""

    principal: str
    role: ProjectRole
    granted_by: str
    granted_at: datetime = Field(default_factory=utcnow)


class Project(Document):
    """A project: a permission boundary over its models, their versions, downloads and figures."""

    name: str
    visibility: ProjectVisibility = ProjectVisibility.INTERNAL
    grants: list[ProjectGrant] = Field(default_factory=list)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "projects"
        indexes = [
            IndexModel([("name", ASCENDING)], unique=True, name="name_unique"),
            IndexModel([("grants.principal", ASCENDING)], name="grant_principal"),
        ]


class PersistedOperation(Document):
    """A GraphQL document registered by hash (Apollo's persisted-query id: the SHA-256 of its exact text)."""

    id: str  # type: ignore[assignment]  # the hex SHA-256 of `body`
    body: str
    name: str | None = None
    source: str  # who registered it: "ui" (the server's own page) or the engineer who pushed it
    created_at: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "persisted_operations"


class AuditKind(StrEnum):
    """What an audit record is about."""

    MUTATION = "MUTATION"  # a root mutation field, whatever its outcome
    TOKEN = "TOKEN"  # a token made or revoked outside GraphQL (the CLI)
    REFUSED = "REFUSED"  # a refused attempt: UNAUTHENTICATED, FORBIDDEN or RATE_LIMITED, or a route's 401/403
    SIGN_IN = "SIGN_IN"  # the first sign-in of a principal this server had not seen


class AuditEvent(Document):
    """One audit record: who did what to which target, with what outcome, when and from where. Written once
    and never changed (db/audit.py offers no update); deleted only by its own retention."""

    at: datetime = Field(default_factory=utcnow)
    kind: AuditKind
    principal: str | None = None
    # The root field (`createToken`), the CLI command (`token create`) or the route (`GET /downloads`).
    action: str
    # The model, project, token, webhook or principal the action named, when it named one.
    target: str | None = None
    project: str | None = None
    # The result union's type (`ModelVersion`, `InvalidInput`), a top-level error code, or `OK`.
    outcome: str
    client_address: str | None = None
    transport: str  # "http", "websocket" or "cli"

    class Settings:
        name = "audit_events"
        indexes = [
            IndexModel([("at", DESCENDING), ("_id", DESCENDING)], name="at"),
            IndexModel([("principal", ASCENDING), ("at", DESCENDING)], name="principal_at"),
            IndexModel([("action", ASCENDING), ("at", DESCENDING)], name="action_at"),
            IndexModel([("project", ASCENDING), ("at", DESCENDING)], name="project_at"),
        ]
