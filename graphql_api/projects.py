"""Projects as permission boundaries: their visibility and project-side grants, managed by the project's
MAINTAINERs and by ADMINs, and the grants a caller may read."""

from __future__ import annotations

from dataclasses import dataclass

from .auth import Principal, validate_principal
from .db import projects as projects_db
from .documents import Project, ProjectVisibility
from .errors import Forbidden, InvalidInput
from .roles import ProjectRole
from .scope import ProjectDirectory, has_role
from .validation import validate_name


@dataclass(frozen=True)
class Grant:
    project: str
    principal: str
    role: ProjectRole


def require_maintainer(who: Principal, project: str) -> None:
    """Forbidden unless `who` is a MAINTAINER of `project` (or an ADMIN). The same refusal whether or not
    the project exists, naming no project, so it tells nothing about projects the caller cannot see."""
    validate_name(project, "input.project")
    if not has_role(who, project, ProjectRole.MAINTAINER):
        raise Forbidden(f"managing a project needs its MAINTAINER role; {who.engineer} lacks it")


async def set_visibility(
    directory: ProjectDirectory, who: Principal, project: str, visibility: ProjectVisibility
) -> Project:
    require_maintainer(who, project)
    found = await projects_db.set_visibility(project, visibility)
    directory.forget()  # at once on this instance; within the token cache's lifetime elsewhere
    return found


async def grant(
    directory: ProjectDirectory, who: Principal, project: str, principal: str, role: ProjectRole
) -> Project:
    require_maintainer(who, project)
    validate_principal(principal, "input.principal")
    found = await projects_db.grant(project, principal, role, who.engineer)
    directory.forget()
    return found


async def revoke(directory: ProjectDirectory, who: Principal, project: str, principal: str) -> Project:
    require_maintainer(who, project)
    validate_principal(principal, "input.principal")
    found = await projects_db.revoke(project, principal)
    if found is None:
        raise InvalidInput("input.principal", f"{principal} holds no project-side role in {project!r}")
    directory.forget()
    return found


def own_grants(who: Principal) -> list[Grant]:
    """The caller's effective project roles (its own grants with the project-side ones over them)."""
    return [Grant(p, who.engineer, r) for p, r in sorted(who.grants.items())]


async def project_grants(who: Principal, project: str) -> list[Grant]:
    """A project's project-side grants: for its MAINTAINERs and ADMINs."""
    require_maintainer(who, project)
    found = await projects_db.get(project)
    if found is None:
        return []
    return [Grant(project, g.principal, g.role) for g in found.grants]
