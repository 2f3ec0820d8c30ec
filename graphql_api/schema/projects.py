"""Projects in GraphQL: visibility, grants, and the `grants` query."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Concatenate, ParamSpec

import strawberry

from .. import documents, projects, roles
from ..auth import Principal
from ..scope import ProjectDirectory
from .context import Info
from .enums import graphql_enum
from .errors import InvalidInput, mutation

INPUT = strawberry.argument(description="What to do; see the input type.")
P = ParamSpec("P")


ProjectRole = roles.ProjectRole
graphql_enum(
    ProjectRole,
    "A principal's role in one project.",
    READER="Reads the project's models, downloads and figures.",
    ENGINEER="READER, plus registering, uploading and changing own models in the project.",
    MAINTAINER="ENGINEER, plus changing any model and alias of the project, reading download events' "
    "personal data (clientAddress, userAgent), and managing the project's grants and visibility.",
)


ProjectVisibility = documents.ProjectVisibility
graphql_enum(
    ProjectVisibility,
    "Who may read a project.",
    INTERNAL="Every authenticated principal of the server.",
    PRIVATE="Its grantees only (and principals with a global role).",
)


@strawberry.type(description="A role in a project held by a principal.")
class ProjectGrant:
    project: str = strawberry.field(description="The project.")
    principal: str = strawberry.field(description="Who holds the role.")
    role: ProjectRole = strawberry.field(description="The role.")

    @classmethod
    def of(cls, grant: projects.Grant) -> ProjectGrant:
        return cls(project=grant.project, principal=grant.principal, role=grant.role)


@strawberry.type(description="A project: a permission boundary over its models, downloads and figures.")
class Project:
    name: str = strawberry.field(description="Its name (the models' `projectName`).")
    visibility: ProjectVisibility = strawberry.field(description="Who may read it.")
    grants: list[ProjectGrant] = strawberry.field(description="Its project-side grants.")

    @classmethod
    def from_doc(cls, doc: documents.Project) -> Project:
        return cls(
            name=doc.name,
            visibility=doc.visibility,
            grants=[ProjectGrant(project=doc.name, principal=g.principal, role=g.role) for g in doc.grants],
        )


@strawberry.input(description="A project and who may read it.")
class SetProjectVisibilityInput:
    project: str = strawberry.field(description="The project.")
    visibility: ProjectVisibility = strawberry.field(description="INTERNAL or PRIVATE.")


@strawberry.input(description="A role to give in a project.")
class GrantProjectRoleInput:
    project: str = strawberry.field(description="The project.")
    principal: str = strawberry.field(
        description="Who gets the role (a token's principal or a sign-on name)."
    )
    role: ProjectRole = strawberry.field(description="The role; replaces any project-side role it had there.")


@strawberry.input(description="A project-side role to take away.")
class RevokeProjectRoleInput:
    project: str = strawberry.field(description="The project.")
    principal: str = strawberry.field(description="Whose role.")


SetProjectVisibilityResult = Annotated[
    Project | InvalidInput,
    strawberry.union("SetProjectVisibilityResult", description="The project, or why it did not change."),
]
GrantProjectRoleResult = Annotated[
    Project | InvalidInput,
    strawberry.union("GrantProjectRoleResult", description="The project with its grants, or why not."),
]
RevokeProjectRoleResult = Annotated[
    Project | InvalidInput,
    strawberry.union("RevokeProjectRoleResult", description="The project with its grants, or why not."),
]

CHANGES = (
    "MAINTAINERs of the project and ADMINs only (FORBIDDEN otherwise, the same for a project that does not "
    "exist). It takes effect at once on this instance, within MODELHUB_TOKEN_CACHE_SECONDS on others."
)


@strawberry.type
class ProjectQueries:
    @strawberry.field(
        description="Without `project`: the caller's own project roles (its token's or sign-on's grants with "
        "the project-side ones). With `project`: that project's project-side grants (its MAINTAINERs and "
        "ADMINs only)."
    )
    async def grants(
        self,
        info: Info,
        project: Annotated[str | None, strawberry.argument(description="A project to list.")] = None,
    ) -> list[ProjectGrant]:
        who = info.context.principal
        if project is None:
            return [ProjectGrant.of(g) for g in projects.own_grants(who)]
        return [ProjectGrant.of(g) for g in await projects.project_grants(who, project)]


ProjectChange = Callable[Concatenate[ProjectDirectory, Principal, P], Awaitable[documents.Project]]


async def changed(info: Info, change: ProjectChange[P], *args: P.args, **kwargs: P.kwargs) -> Project:
    """The project after `change` (`projects.grant`...), made by the caller in this instance's directory."""
    ctx = info.context
    return Project.from_doc(await change(ctx.services.projects, ctx.principal, *args, **kwargs))


@strawberry.type
class ProjectMutations:
    @mutation(description="Makes a project INTERNAL or PRIVATE. " + CHANGES)
    async def set_project_visibility(
        self, info: Info, input: Annotated[SetProjectVisibilityInput, INPUT]
    ) -> SetProjectVisibilityResult:
        return await changed(info, projects.set_visibility, input.project, input.visibility)

    @mutation(description="Gives a principal a role in a project. " + CHANGES)
    async def grant_project_role(
        self, info: Info, input: Annotated[GrantProjectRoleInput, INPUT]
    ) -> GrantProjectRoleResult:
        return await changed(info, projects.grant, input.project, input.principal, input.role)

    @mutation(description="Takes a principal's project-side role away. " + CHANGES)
    async def revoke_project_role(
        self, info: Info, input: Annotated[RevokeProjectRoleInput, INPUT]
    ) -> RevokeProjectRoleResult:
        return await changed(info, projects.revoke, input.project, input.principal)
