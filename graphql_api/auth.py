"""Who is calling: bearer tokens (or, in header mode, `X-Engineer-ID`) → a `Principal` with a role.

Framework-free: the edges hand it a mapping of headers (or a WebSocket's `connection_init` payload).
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Literal

from .db import tokens as tokens_db
from .documents import ApiToken, ClientKind, TokenGrant, utcnow
from .errors import Forbidden, InvalidInput, Unauthenticated
from .health import TaskSet
from .oidc import OidcVerifier, looks_like_jwt
from .roles import ProjectRole, Role
from .validation import validate_name

ENGINEER_HEADER = "x-engineer-id"
ANONYMOUS = "anonymous"
TOKEN_PREFIX = "mh_"
_ENGINEER_RE = re.compile(r"^[A-Za-z0-9._@+-]{1,128}$")
RANK = {Role.READER: 0, Role.ENGINEER: 1, Role.ADMIN: 2}
AuthMode = Literal["header", "token", "oidc"]
# `lastUsedAt` writes waiting for the database at most; a token whose write would be one more is written
# at its next use instead.
MAX_PENDING_TOUCHES = 100
MAX_CACHED_TOKENS = 10_000  # of each kind: tokens in use, and tokens refused
log = logging.getLogger("modelhub.auth")
NO_GRANTS: Mapping[str, ProjectRole] = MappingProxyType({})
MAX_TOKEN_GRANTS = 100


def grant_map(pairs: Iterable[tuple[str, ProjectRole]]) -> dict[str, ProjectRole]:
    """A token's project roles from (project, role) pairs, each project once (a second role for one project
    is a mistake to name, not one to resolve silently; `create_token` bounds how many)."""
    grants: dict[str, ProjectRole] = {}
    for project, role in pairs:
        if project in grants:
            raise InvalidInput("grants", f"project {project!r} is given twice")
        grants[project] = role
    return grants


def frozen_grants(grants: Mapping[str, ProjectRole] | None = None) -> Mapping[str, ProjectRole]:
    """An immutable copy of project name -> role."""
    return MappingProxyType(dict(grants)) if grants else NO_GRANTS


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller as recorded on registrations and download events, with what it may do: `role` is its GLOBAL
    role (None: none, only its project `grants`), `grants` its role per project name."""

    engineer: str
    role: Role | None = Role.ENGINEER
    # The token it came from (its record id) and when that token expires: tickets and links issued to the
    # principal carry the id and die with the token; a WebSocket re-checks the token by then at the latest.
    token_id: str | None = field(default=None, compare=False)
    expires_at: datetime | None = field(default=None, compare=False)
    grants: Mapping[str, ProjectRole] = field(default_factory=lambda: NO_GRANTS, compare=False)
    # The client kind its token was created with (`--kind ci`): every download it makes is recorded so.
    client_kind: ClientKind | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.grants, MappingProxyType):
            object.__setattr__(self, "grants", frozen_grants(self.grants))

    def require(self, role: Role, action: str) -> None:
        """Forbidden unless this principal's GLOBAL role is at least `role`."""
        if self.role is None or RANK[self.role] < RANK[role]:
            held = self.role.value if self.role is not None else "without a global role"
            raise Forbidden(f"{action} needs the {role.value} role; {self.engineer} is {held}")

    def project_role(self, project: str) -> ProjectRole | None:
        """Its role in `project` by grant (None: no grant; the global role is not folded in)."""
        return self.grants.get(project)

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


def validate_principal(value: str, field: str = "principal") -> None:
    """A principal name: 1-128 letters, digits or . _ @ + - (what X-Engineer-ID and tokens accept)."""
    if not _ENGINEER_RE.match(value):
        raise InvalidInput(field, "must be 1-128 letters, digits or . _ @ + -")


def hash_token(token: str) -> str:
    # Tokens carry 256 random bits, so a plain SHA-256 cannot be brute-forced; no salt or KDF needed.
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def bearer(headers: Mapping[str, str]) -> str | None:
    """The token of an `Authorization: Bearer …` header, if there is one."""
    value = headers.get("authorization") or headers.get("Authorization")
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("Authorization must be `Bearer <token>`")
    return token.strip()


def header_principal(headers: Mapping[str, str]) -> Principal:
    """Header mode: the caller named by `X-Engineer-ID` (anonymous when absent), as an ENGINEER."""
    raw = headers.get(ENGINEER_HEADER)
    if raw is None or raw == "":
        return Principal(ANONYMOUS)
    if not _ENGINEER_RE.match(raw):
        raise Unauthenticated("X-Engineer-ID must be 1-128 letters, digits or . _ @ + -")
    return Principal(raw)


@dataclass
class _Cached:
    principal: Principal
    until: float


@dataclass
class Authenticator:
    """Resolves callers. Token lookups are cached for `cache_seconds` (a revocation takes at most that long
    to bite) and `lastUsedAt` is written at most once per `touch_seconds`: no DB write per request. That write
    is best-effort and off the request: a background task (at most MAX_PENDING_TOUCHES at once), never
    awaited by the request and never raising into it, so a stalled database cannot hold up or fail a request
    whose token is cached."""

    mode: AuthMode
    cache_seconds: float = 30.0
    touch_seconds: float = 60.0
    _cache: dict[str, _Cached] = field(default_factory=dict)
    # Tokens found to be unknown, revoked or expired, apart: a flood of made-up tokens fills (and clears)
    # only this one, never the entries of the tokens in use.
    _refused: dict[str, float] = field(default_factory=dict)
    _touched: dict[str, float] = field(default_factory=dict)
    _touches: TaskSet = field(default_factory=TaskSet)  # pending lastUsedAt writes
    # MODELHUB_AUTH=oidc: bearer JWTs go to the issuer's verifier, every other token to the token records.
    oidc: OidcVerifier | None = None

    async def authenticate(self, headers: Mapping[str, str]) -> Principal | None:
        """The caller, or None for an anonymous one in token mode (refused by whatever needs a principal)."""
        token = bearer(headers)
        if token is not None:
            return await self.from_token(token)
        if self.mode == "header":
            return header_principal(headers)
        return None

    async def from_token(self, token: str) -> Principal:
        if self.oidc is not None and looks_like_jwt(token):
            who = await self.oidc.verify(token)
            return Principal(who.name, who.role, expires_at=who.expires_at, grants=who.grants)
        digest = hash_token(token)
        now = time.monotonic()
        if self._refused.get(digest, 0.0) >= now:
            raise Unauthenticated("the token is unknown, revoked or expired")
        cached = self._cache.get(digest)
        if cached is None or cached.until < now:
            found = await tokens_db.by_hash(digest)
            principal = _principal_of(found)
            until = now + self.cache_seconds
            if principal is None:
                if len(self._refused) >= MAX_CACHED_TOKENS:
                    self._refused.clear()
                self._refused[digest] = until
                self._cache.pop(digest, None)
                raise Unauthenticated("the token is unknown, revoked or expired")
            if principal.expires_at is not None:
                # An expiring token is looked up again when it expires, not up to a cache period later.
                until = min(until, now + (principal.expires_at - utcnow()).total_seconds())
            cached = _Cached(principal, until)
            if len(self._cache) >= MAX_CACHED_TOKENS:
                self._cache.clear()
            self._cache[digest] = cached
        if (
            now - self._touched.get(digest, -1e9) >= self.touch_seconds
            and len(self._touches) < MAX_PENDING_TOUCHES
        ):
            self._touched[digest] = now
            self._touches.spawn(_touch(digest))
        return cached.principal

    async def drain(self, seconds: float) -> None:
        """At shutdown: waits up to `seconds` for the pending `lastUsedAt` writes, then cancels them."""
        await self._touches.drain(seconds)

    def forget(self) -> None:
        """Drops the cache (after a revocation through this instance)."""
        self._cache.clear()
        self._refused.clear()


async def _touch(digest: str) -> None:
    """A token's `lastUsedAt`, best-effort: a failure is logged, never raised (nobody awaits it)."""
    try:
        await tokens_db.touch(digest, utcnow())
    except Exception as exc:
        log.info("a token's last use was not recorded: %s", type(exc).__name__)


def _principal_of(token: ApiToken | None) -> Principal | None:
    if token is None or token.revoked_at is not None:
        return None
    if token.expires_at is not None and token.expires_at <= utcnow():
        return None
    return Principal(
        token.principal,
        token.role,
        str(token.id),
        token.expires_at,
        frozen_grants(token.grant_map()),
        client_kind=token.client_kind,
    )


async def token_principal(token_id: str) -> Principal | None:
    """The principal of the token with this record id while it is good (not revoked, not expired)."""
    return _principal_of(await tokens_db.by_id(token_id))


def require_principal(principal: Principal | None) -> Principal:
    if principal is None:
        raise Unauthenticated("send `Authorization: Bearer <token>`")
    return principal


async def create_token(
    name: str,
    principal: str,
    role: Role | None,
    created_by: str,
    expires_in_days: int | None = None,
    token: str | None = None,
    grants: Mapping[str, ProjectRole] | None = None,
    client_kind: ClientKind | None = None,
) -> tuple[str, ApiToken]:
    """A new token (returned once, never stored) and its record. `token` sets the value (for provisioning)."""
    validate_name(name, "name")
    if not _ENGINEER_RE.match(principal):
        raise InvalidInput("principal", "must be 1-128 letters, digits or . _ @ + -")
    if expires_in_days is not None and not 1 <= expires_in_days <= 3650:
        raise InvalidInput("expiresInDays", "must be between 1 and 3650")
    value = token or new_token()
    if len(value) < 32:
        raise InvalidInput("token", "must be at least 32 characters")
    if grants and len(grants) > MAX_TOKEN_GRANTS:
        raise InvalidInput("grants", f"at most {MAX_TOKEN_GRANTS} project roles")
    for project in grants or {}:
        validate_name(project, "grants.project")
    expires = utcnow() + timedelta(days=expires_in_days) if expires_in_days else None
    record = ApiToken(
        name=name,
        principal=principal,
        role=role,
        grants=[TokenGrant(project=p, role=r) for p, r in sorted((grants or {}).items())],
        token_hash=hash_token(value),
        created_by=created_by,
        expires_at=expires,
        client_kind=client_kind,
    )
    if not await tokens_db.insert(record):
        raise InvalidInput("name", f"a token named {name!r} exists already")
    return value, record


async def list_tokens() -> list[ApiToken]:
    return await tokens_db.all_tokens()


async def revoke_token(name: str) -> ApiToken:
    revoked = await tokens_db.revoke(name, utcnow())
    if revoked is None:
        raise InvalidInput("name", f"no active token named {name!r}")
    return revoked


async def bootstrap_admin() -> str | None:
    """On a database with no token at all, one ADMIN token (returned once to be printed); else None.
    Its fixed name makes a race between workers create at most one."""
    if await tokens_db.any_token():
        return None
    try:
        value, _ = await create_token("bootstrap-admin", "admin", Role.ADMIN, "modelhub serve")
    except InvalidInput:
        return None  # another worker created it
    return value


def expires_label(moment: datetime | None) -> str:
    return moment.isoformat() if moment else "never"
