"""`modelhub seed-demo`'s data as callers see it (the command itself: tests/test_cli.py)."""

from __future__ import annotations

import pytest

from graphql_api import demo, registry
from graphql_api.auth import Principal
from graphql_api.config import Settings
from graphql_api.db import connect
from graphql_api.db import projects as projects_db
from graphql_api.documents import ProjectVisibility
from graphql_api.pagination import PageRequest
from graphql_api.queries import ModelOrder, ModelQuery
from graphql_api.roles import ProjectRole
from graphql_api.scope import ProjectDirectory


@pytest.mark.parametrize("store_kind", ["local"])
async def test_demo_projects_are_internal(settings: Settings) -> None:
    """seed-demo into a database whose start-up migration already ran creates its projects INTERNAL, so
    a caller holding only a grant in another project sees every demo model."""
    async with connect(settings.mongo_uri or "", settings.mongo_db):
        seeded = await demo.seed(models=8, events=20)
        projects = await projects_db.all_projects()
        assert {p.name for p in projects} == set(demo.PROJECTS)
        assert all(p.visibility is ProjectVisibility.INTERNAL for p in projects)
        guest = Principal("guest", None, grants={"elsewhere": ProjectRole.READER})
        _, scope = await ProjectDirectory(0).resolve(guest)
        page = await registry.list_models(scope, ModelQuery(), ModelOrder(), PageRequest(first=50))
        assert seeded.models == len(page.items) == 8
