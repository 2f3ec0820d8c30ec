"""Roles (global and per project): a leaf module, so that the CLI can name them without importing the ODM."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """A principal's GLOBAL role, over every project: READER reads every project (INTERNAL and PRIVATE),
    ADMIN may do everything. ENGINEER is kept for tokens made before projects had grants: it reads and writes
    in every project, as before (see the README's "Teams, sign-on and privacy")."""

    READER = "READER"
    ENGINEER = "ENGINEER"
    ADMIN = "ADMIN"


class ProjectRole(StrEnum):
    """A principal's role in one project: READER reads and downloads it, ENGINEER also registers and uploads,
    MAINTAINER also moves any alias, reads download events' personal data and manages the project's grants and
    visibility."""

    READER = "READER"
    ENGINEER = "ENGINEER"
    MAINTAINER = "MAINTAINER"


PROJECT_RANK = {ProjectRole.READER: 0, ProjectRole.ENGINEER: 1, ProjectRole.MAINTAINER: 2}
