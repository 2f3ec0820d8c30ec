"""Scope and roles without a server: narrowing filters, effective roles, the projects snapshot."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from bson import ObjectId

from graphql_api.auth import Principal
from graphql_api.catalogue import MERGE_LISTS, Catalogue
from graphql_api.db import projects as projects_db
from graphql_api.documents import Project, ProjectGrant, ProjectVisibility
from graphql_api.pagination import PageRequest
from graphql_api.queries import EventQuery, ModelOrder, ModelQuery
from graphql_api.roles import ProjectRole, Role
from graphql_api.scope import ProjectDirectory, Scope, has_role, project_role, snapshot_of


def test_narrowing_never_widens() -> None:
    """A scoped read asks for its visible projects when it names none, drops the invisible ones it names,
    and gets None (an empty answer, never the "any" of an empty filter) when nothing visible remains."""
    scope = Scope(Principal("b", None), frozenset({"B", "C"}))
    assert scope.narrow([]) == ["B", "C"]
    assert scope.narrow(["A", "B"]) == ["B"]
    assert scope.narrow(["A"]) is None
    assert scope.models(ModelQuery(project_names=["A"])) is None
    narrowed = scope.events(EventQuery(model_names=["m"]))
    assert narrowed is not None and narrowed.project_names == ["B", "C"] and narrowed.model_names == ["m"]
    assert Scope.everything(None).narrow([]) == [] and Scope.nothing().narrow([]) is None


def test_writable_projects() -> None:
    """`writable` is every project (None) for a global ENGINEER or ADMIN, else the readable projects held
    as ENGINEER or MAINTAINER (a global READER's ENGINEER grant too); nothing for anonymous."""
    assert Scope.everything(Principal("a", Role.ADMIN)).writable() is None
    assert Scope.everything(Principal("e", Role.ENGINEER)).writable() is None
    grants = {"A": ProjectRole.ENGINEER, "B": ProjectRole.READER, "C": ProjectRole.MAINTAINER}
    auditor = Scope.everything(Principal("r", Role.READER, grants=grants))
    assert auditor.writable() == {"A", "C"}
    member = Scope(Principal("m", None, grants=grants), frozenset({"A", "B", "C", "INTERNAL"}))
    assert member.writable() == {"A", "C"}
    assert Scope.nothing().writable() == frozenset()


def test_effective_roles() -> None:
    """A grant and a global role combine to the higher; ADMIN maintains everything, a global ENGINEER
    (a migrated token) writes everywhere but maintains nothing, no role means nothing."""
    engineer = Principal("e", Role.ENGINEER, grants={"A": ProjectRole.MAINTAINER})
    assert project_role(engineer, "A") is ProjectRole.MAINTAINER
    assert project_role(engineer, "B") is ProjectRole.ENGINEER
    assert not has_role(engineer, "B", ProjectRole.MAINTAINER)
    assert has_role(Principal("r", Role.ADMIN), "any", ProjectRole.MAINTAINER)
    assert project_role(Principal("n", None), "A") is None and project_role(None, "A") is None
    reader = Scope(Principal("r", None, grants={"A": ProjectRole.READER}), frozenset({"A"}))
    assert reader.can_read("A") and not reader.can_write("A") and not reader.sees_personal_data("A")


def test_snapshot_keeps_the_highest_grant_and_the_internal_projects() -> None:
    """The directory's snapshot: INTERNAL names, and per principal the highest project-side role."""
    grants = [
        ProjectGrant(principal="p", role=ProjectRole.READER, granted_by="x"),
        ProjectGrant(principal="p", role=ProjectRole.MAINTAINER, granted_by="x"),  # a raced double entry
    ]
    snap = snapshot_of(
        [
            Project.model_construct(name="A", visibility=ProjectVisibility.PRIVATE, grants=grants),
            Project.model_construct(name="B", visibility=ProjectVisibility.INTERNAL, grants=[]),
        ]
    )
    assert snap.internal == frozenset({"B"})
    assert dict(snap.grants["p"]) == {"A": ProjectRole.MAINTAINER}


def test_a_scoped_catalogue_page_walks_rather_than_merges_many_projects() -> None:
    """A page filtered by more project names than MERGE_LISTS (a caller without a global role reading
    every INTERNAL project) has the rows of the per-project merge, and looks at a page of entries, not
    one list per project; projects it may not read stay out."""
    now = datetime.now(UTC)
    catalogue = Catalogue()
    catalogue._replace(
        [
            {"_id": ObjectId(), "name": f"m{i:04d}", "project_name": f"p{i % 200}", "owner": "o", "tags": [],
             "created_at": now - timedelta(seconds=i), "updated_at": now}
            for i in range(2000)
        ]
    )  # fmt: skip
    readable = [f"p{i}" for i in range(200) if i != 7]
    assert len(readable) > MERGE_LISTS
    before = catalogue.examined
    page = catalogue.page(ModelQuery(project_names=readable), ModelOrder(), PageRequest(first=20))
    assert catalogue.examined - before == 21 + 1  # the page, the row after it, and m0007 (p7) skipped
    want = [f"m{i:04d}" for i in range(2000) if i % 200 != 7][:20]
    assert [name for name, _ in page.names] == want
    assert page.count() == 2000 - 10


async def test_the_directory_knows_a_project_only_from_a_snapshot_it_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`known` answers from the last snapshot read (expired too: projects are never deleted), never reads
    one itself, and knows nothing once the snapshot is forgotten (a new project on this instance)."""
    reads = 0

    async def all_projects() -> list[Project]:
        nonlocal reads
        reads += 1
        private = Project.model_construct(name="A", visibility=ProjectVisibility.PRIVATE, grants=[])
        return [private, Project.model_construct(name="B", visibility=ProjectVisibility.INTERNAL, grants=[])]

    monkeypatch.setattr(projects_db, "all_projects", all_projects)
    directory = ProjectDirectory(0)  # every snapshot expires at once
    assert not directory.known("A") and reads == 0
    await directory.snapshot()
    assert directory.known("A") and directory.known("B") and not directory.known("C") and reads == 1
    directory.forget()
    assert not directory.known("A") and reads == 1
