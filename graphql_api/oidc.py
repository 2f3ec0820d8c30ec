"""OpenID Connect sign-on: bearer JWTs from one issuer → who calls (discovery, JWKS cache, claims, grants).

Framework-free: `auth.Authenticator` hands it the bearer token. Verification is joserfc's; this module only
decides which keys to trust and which claims to demand:
- the discovery document (`<issuer>/.well-known/openid-configuration`) and the JWKS it names are fetched
  lazily with httpx and kept; the JWKS is fetched again when a token names a `kid` it lacks (key rotation),
  at most once per `refetch_seconds` whatever the tokens say (an unknown `kid` costs an attacker nothing),
  and when it is older than `max_age_seconds` (a key the issuer withdrew stops being trusted);
- only RS256 and ES256 signatures are accepted (never `none`, never an HMAC whose secret could be the public
  key); `iss` must be the issuer, `aud` must contain the audience, `exp` is required, `exp`/`nbf`/`iat` are
  checked with `leeway_seconds`;
- the principal is the configured claim (default `email`; a token without it falls back to `sub`); an
  `email_verified: false` beside an email principal is refused;
- the groups claim maps to a global role and project grants through `GroupGrants`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import httpx
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from .config import Settings
from .errors import Unauthenticated
from .roles import PROJECT_RANK, ProjectRole, Role

log = logging.getLogger("modelhub")

ALGORITHMS = ("RS256", "ES256")
# The key of a group's mapping that names its global role instead of a project (no project is named "*").
GLOBAL = "*"
_GLOBAL_RANK = {Role.READER: 0, Role.ENGINEER: 1, Role.ADMIN: 2}
_PRINCIPAL_RE = re.compile(r"^[A-Za-z0-9._@+-]{1,128}$")
_MAX_GROUPS = 1000


class OidcConfigError(ValueError):
    """The OIDC settings cannot work (raised at start-up, never to a client)."""


@dataclass(frozen=True)
class GroupGrant:
    """What membership of one group gives: an optional global role and a role per project."""

    role: Role | None
    projects: Mapping[str, ProjectRole]


@dataclass(frozen=True)
class GroupGrants:
    """`MODELHUB_OIDC_GROUP_GRANTS`: group → {project: role}, with `"*"` naming a global role (READER or
    ADMIN). A principal in several groups gets the highest role each of them gives, per project and
    globally; groups not in the mapping give nothing."""

    groups: Mapping[str, GroupGrant] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: str | Mapping[str, Any] | None) -> GroupGrants:
        if raw is None or raw == "":
            return cls()
        try:
            data = json.loads(raw) if isinstance(raw, str) else raw
        except json.JSONDecodeError as exc:
            raise OidcConfigError(f"MODELHUB_OIDC_GROUP_GRANTS is not JSON: {exc}") from None
        if not isinstance(data, Mapping):
            raise OidcConfigError(
                "MODELHUB_OIDC_GROUP_GRANTS must be a JSON object: group -> {project: role}"
            )
        groups: dict[str, GroupGrant] = {}
        for group, roles in data.items():
            if not isinstance(roles, Mapping):
                raise OidcConfigError(f"group {group!r}: expected an object of project -> role")
            role: Role | None = None
            projects: dict[str, ProjectRole] = {}
            for project, name in roles.items():
                if project == GLOBAL:
                    if name not in (Role.READER.value, Role.ADMIN.value):
                        raise OidcConfigError(f"group {group!r}: the global role must be READER or ADMIN")
                    role = Role(name)
                elif name in ProjectRole.__members__:
                    projects[project] = ProjectRole(name)
                else:
                    allowed = ", ".join(ProjectRole.__members__)
                    raise OidcConfigError(
                        f"group {group!r}, project {project!r}: role must be one of {allowed}"
                    )
            groups[group] = GroupGrant(role, MappingProxyType(projects))
        return cls(MappingProxyType(groups))

    def resolve(self, member_of: Iterable[str]) -> tuple[Role | None, Mapping[str, ProjectRole]]:
        """The global role (None: none) and the project grants of a principal in these groups."""
        role: Role | None = None
        projects: dict[str, ProjectRole] = {}
        for group in member_of:
            grant = self.groups.get(group)
            if grant is None:
                continue
            if grant.role is not None and (role is None or _GLOBAL_RANK[grant.role] > _GLOBAL_RANK[role]):
                role = grant.role
            for project, given in grant.projects.items():
                held = projects.get(project)
                if held is None or PROJECT_RANK[given] > PROJECT_RANK[held]:
                    projects[project] = given
        return role, MappingProxyType(projects)


@dataclass(frozen=True)
class Identity:
    """A verified token's caller: name, global role, grants and when the token stops being good."""

    name: str
    role: Role | None
    grants: Mapping[str, ProjectRole]
    expires_at: datetime


@dataclass(frozen=True)
class Endpoints:
    """What the browser needs from the discovery document to sign in (authorization-code flow, PKCE)."""

    authorization_endpoint: str
    token_endpoint: str


def looks_like_jwt(token: str) -> bool:
    """Whether a bearer value is a compact JWS (three parts, the first a JSON header naming an `alg`);
    modelhub's own tokens (`mh_` + urlsafe base64) have no dots, and any other value is an API token."""
    if token.count(".") != 2:
        return False
    try:
        return "alg" in jws.extract_compact(token.encode()).protected
    except (JoseError, ValueError, UnicodeError):
        return False


@dataclass
class OidcVerifier:
    """Verifies bearer JWTs from one issuer; one per app, built in the lifespan (it holds an httpx client)."""

    issuer: str
    audience: str
    http: httpx.AsyncClient
    principal_claim: str = "email"
    groups_claim: str = "groups"
    grants: GroupGrants = field(default_factory=GroupGrants)
    leeway_seconds: int = 30
    refetch_seconds: float = 60.0
    max_age_seconds: float = 3600.0
    _discovery: dict[str, Any] | None = None
    _keys: KeySet | None = None
    _fetched_at: float = float("-inf")  # when the JWKS was last asked for (successfully or not)
    _discovery_failed_at: float = float("-inf")
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def endpoints(self) -> Endpoints:
        doc = await self._discover()
        return Endpoints(str(doc["authorization_endpoint"]), str(doc["token_endpoint"]))

    async def verify(self, token: str) -> Identity:
        """The caller a token names, or Unauthenticated (never another error for a bad token)."""
        try:
            header = jws.extract_compact(token.encode()).protected
        except (JoseError, ValueError, UnicodeError):
            raise Unauthenticated("the bearer token is not a valid JWT") from None
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise Unauthenticated(f"JWTs must be signed with {' or '.join(ALGORITHMS)}")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise Unauthenticated("the JWT's kid is not a string")
        key = await self._key(kid)
        try:
            decoded = jwt.decode(token, key, algorithms=list(ALGORITHMS))
            jwt.JWTClaimsRegistry(
                leeway=self.leeway_seconds,
                iss={"essential": True, "value": self.issuer},
                aud={"essential": True, "value": self.audience},
                exp={"essential": True},
            ).validate(decoded.claims)
        except JoseError as exc:
            raise Unauthenticated(f"the JWT was refused ({exc.error})") from None
        return self._identity(decoded.claims)

    def _identity(self, claims: Mapping[str, Any]) -> Identity:
        name = claims.get(self.principal_claim)
        if name is None or name == "":
            name = claims.get("sub")
        elif self.principal_claim == "email" and claims.get("email_verified") is False:
            raise Unauthenticated("the JWT's email is not verified")
        if not isinstance(name, str) or not _PRINCIPAL_RE.match(name):
            raise Unauthenticated(
                f"the JWT's {self.principal_claim} (or sub) must be 1-128 letters, digits or . _ @ + -"
            )
        groups = claims.get(self.groups_claim) or []
        if isinstance(groups, str):
            groups = [groups]
        if not isinstance(groups, list):
            raise Unauthenticated(f"the JWT's {self.groups_claim} claim must be a list of strings")
        role, grants = self.grants.resolve(g for g in groups[:_MAX_GROUPS] if isinstance(g, str))
        # When this server stops accepting it: a WebSocket signed in with it is closed then.
        expires = datetime.fromtimestamp(int(claims["exp"]) + self.leeway_seconds, UTC)
        return Identity(name, role, grants, expires)

    async def _key(self, kid: str | None) -> Any:
        keys = self._keys
        stale = time.monotonic() - self._fetched_at > self.max_age_seconds
        if keys is None or stale or not _has(keys, kid):
            keys = await self._refetch(keys, kid)
        if keys is None or not _has(keys, kid):
            raise Unauthenticated("the JWT's signing key is not one of the issuer's keys")
        return keys.get_by_kid(kid)

    async def _refetch(self, seen: KeySet | None, kid: str | None) -> KeySet | None:
        async with self._lock:
            if self._keys is not seen and self._keys is not None and _has(self._keys, kid):
                return self._keys  # another request refetched while this one waited
            if time.monotonic() - self._fetched_at < self.refetch_seconds:
                return self._keys  # rate-limited: the unknown kid stays unknown until the next window
            self._fetched_at = time.monotonic()
            try:
                doc = await self._discover()
                response = await self.http.get(str(doc["jwks_uri"]))
                response.raise_for_status()
                self._keys = KeySet.import_key_set(response.json())
            except (Unauthenticated, httpx.HTTPError, ValueError, KeyError, JoseError) as exc:
                # The keys already held stay trusted while the provider cannot be asked (its tokens keep
                # working through a provider outage); with none, its tokens are refused.
                log.warning("the OIDC issuer's JWKS could not be fetched: %s", type(exc).__name__)
            return self._keys

    async def _discover(self) -> dict[str, Any]:
        if self._discovery is not None:
            return self._discovery
        # A provider that failed is asked again only after `refetch_seconds`: page loads and tokens cannot
        # make this server hammer it (nor wait on its timeout each time).
        if time.monotonic() - self._discovery_failed_at < self.refetch_seconds:
            raise Unauthenticated("the sign-in provider could not be reached")
        url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        try:
            response = await self.http.get(url)
            response.raise_for_status()
            doc = response.json()
            if not isinstance(doc, dict) or doc.get("issuer") != self.issuer:
                raise ValueError("the discovery document names another issuer")
            for name in ("jwks_uri", "authorization_endpoint", "token_endpoint"):
                if not isinstance(doc.get(name), str):
                    raise ValueError(f"the discovery document has no {name}")
        except (httpx.HTTPError, ValueError):
            self._discovery_failed_at = time.monotonic()
            raise Unauthenticated("the sign-in provider could not be reached") from None
        self._discovery = doc
        return doc


def _has(keys: KeySet, kid: str | None) -> bool:
    if kid is None:
        return len(keys.keys) == 1
    return any(k.kid == kid for k in keys.keys)


def group_grants(settings: Settings) -> GroupGrants:
    """The OIDC settings checked (at start-up: a mistake stops the app with the reason) and the mapping."""
    if not settings.oidc_issuer or not settings.oidc_audience:
        raise OidcConfigError("MODELHUB_AUTH=oidc needs MODELHUB_OIDC_ISSUER and MODELHUB_OIDC_AUDIENCE")
    if not settings.oidc_issuer.startswith(("https://", "http://")):
        raise OidcConfigError("MODELHUB_OIDC_ISSUER must be an http(s) URL")
    return GroupGrants.parse(settings.oidc_group_grants)


def verifier(settings: Settings, grants: GroupGrants, http: httpx.AsyncClient) -> OidcVerifier:
    assert settings.oidc_issuer and settings.oidc_audience  # checked by group_grants
    return OidcVerifier(
        issuer=settings.oidc_issuer,
        audience=settings.oidc_audience,
        http=http,
        principal_claim=settings.oidc_principal_claim,
        groups_claim=settings.oidc_groups_claim,
        grants=grants,
        leeway_seconds=settings.oidc_leeway_seconds,
        refetch_seconds=settings.oidc_jwks_refetch_seconds,
        max_age_seconds=settings.oidc_jwks_max_age_seconds,
    )
