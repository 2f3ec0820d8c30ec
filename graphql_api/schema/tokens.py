"""Token administration in GraphQL (ADMIN only): list, create, revoke."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry

from .. import auth, documents, roles
from .context import Info
from .downloads import ClientKind
from .enums import graphql_enum
from .errors import InvalidInput, mutation
from .node import from_doc
from .projects import ProjectRole

Role = roles.Role
graphql_enum(
    Role,
    "What a token may do.",
    READER="Queries, the live feed and downloads.",
    ENGINEER="READER, plus registering and changing own models.",
    ADMIN="ENGINEER, plus any model and token administration.",
)


@strawberry.type(description="A token's role in one project.")
class TokenGrant:
    project: str = strawberry.field(description="The project.")
    role: ProjectRole = strawberry.field(description="The role in it.")


@strawberry.input(description="A role in one project, for a new token.")
class TokenGrantInput(TokenGrant):
    """The same fields as `TokenGrant`, as an input."""


@strawberry.type(description="A bearer token's record; the token itself is shown only when it is created.")
class ApiToken:
    name: str = strawberry.field(description="Its unique name.")
    principal: str = strawberry.field(description="Who it acts as (recorded on registrations and downloads).")
    role: Role | None = strawberry.field(description="Its global role, if any (over every project).")
    grants: list[TokenGrant] = strawberry.field(description="Its roles in single projects.")
    created_by: str = strawberry.field(description="Who created it.")
    created_at: datetime = strawberry.field(description="When it was created.")
    expires_at: datetime | None = strawberry.field(description="When it stops working, if ever.")
    last_used_at: datetime | None = strawberry.field(description="Its last use, to within a minute.")
    revoked_at: datetime | None = strawberry.field(description="When it was revoked, if it was.")
    kind: ClientKind | None = strawberry.field(
        description="The client kind of every download made with it (null: decided per request)."
    )

    @classmethod
    def from_doc(cls, doc: documents.ApiToken) -> ApiToken:
        return from_doc(
            cls,
            doc,
            role=doc.role,
            grants=[TokenGrant(project=p, role=r) for p, r in sorted(doc.grant_map().items())],
            kind=doc.client_kind,
        )


@strawberry.type(description="A new token: `token` is shown this once and never again.")
class CreatedToken:
    token: str = strawberry.field(description="Send it as `Authorization: Bearer <token>`.")
    api_token: ApiToken = strawberry.field(description="Its record.")


@strawberry.input(description="A new bearer token.")
class CreateTokenInput:
    name: str = strawberry.field(description="A unique name, e.g. `grafana` or `ci-alice`.")
    principal: str = strawberry.field(description="Who the token acts as.")
    role: Role | None = strawberry.field(
        default=Role.READER,
        description="Its global role over every project; null for a token with project `grants` only.",
    )
    grants: list[TokenGrantInput] | None = strawberry.field(
        default=None, description="Its roles in single projects (e.g. vision: ENGINEER)."
    )
    expires_in_days: int | None = strawberry.field(default=None, description="1..3650; never when omitted.")
    kind: ClientKind | None = strawberry.field(
        default=None,
        description="Record every download made with it as this kind (e.g. CI for a CI job's token); a "
        "client's own claim cannot override it. Null: decided per request.",
    )


@strawberry.input(description="The token to revoke.")
class RevokeTokenInput:
    name: str = strawberry.field(description="Its name.")


CreateTokenResult = Annotated[
    CreatedToken | InvalidInput, strawberry.union("CreateTokenResult", description="The token, or why not.")
]
RevokeTokenResult = Annotated[
    ApiToken | InvalidInput,
    strawberry.union("RevokeTokenResult", description="The revoked token, or why not."),
]
INPUT = strawberry.argument(description="What to do; see the input type.")


@strawberry.type
class TokenQueries:
    @strawberry.field(description="Every token's record (ADMIN only).")
    async def tokens(self, info: Info) -> list[ApiToken]:
        info.context.principal.require(roles.Role.ADMIN, "listing tokens")
        return [ApiToken.from_doc(t) for t in await auth.list_tokens()]


@strawberry.type
class TokenMutations:
    @mutation(description="Creates a bearer token (ADMIN only); its value is returned once.")
    async def create_token(self, info: Info, input: Annotated[CreateTokenInput, INPUT]) -> CreateTokenResult:
        who = info.context.principal
        who.require(roles.Role.ADMIN, "creating tokens")
        role = input.role
        grants = auth.grant_map((g.project, g.role) for g in input.grants or [])
        kind = documents.ClientKind(input.kind.name) if input.kind else None
        value, record = await auth.create_token(
            input.name,
            input.principal,
            role,
            who.engineer,
            input.expires_in_days,
            grants=grants,
            client_kind=kind,
        )
        return CreatedToken(token=value, api_token=ApiToken.from_doc(record))

    @mutation(
        description="Revokes a bearer token (ADMIN only); it stops working at once here, "
        "within MODELHUB_TOKEN_CACHE_SECONDS elsewhere."
    )
    async def revoke_token(self, info: Info, input: Annotated[RevokeTokenInput, INPUT]) -> RevokeTokenResult:
        info.context.principal.require(roles.Role.ADMIN, "revoking tokens")
        revoked = await auth.revoke_token(input.name)
        info.context.services.auth.forget()
        return ApiToken.from_doc(revoked)
