"""MODELHUB_OIDC_GROUP_GRANTS: parsing (mistakes stop the app with the reason) and how groups resolve to a
global role and project grants (no server needed)."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from graphql_api.oidc import GroupGrants, OidcConfigError
from graphql_api.roles import ProjectRole, Role

MAPPING = {
    "vision-team": {"vision": "ENGINEER", "nlp": "READER"},
    "vision-leads": {"vision": "MAINTAINER"},
    "nlp-team": {"nlp": "ENGINEER"},
    "everyone": {"*": "READER"},
    "platform": {"*": "ADMIN"},
}


def test_groups_resolve_to_the_highest_role_each_gives() -> None:
    """Per project the highest role any of the principal's groups gives; unmapped groups give nothing."""
    grants = GroupGrants.parse(MAPPING)
    role, projects = grants.resolve(["vision-team", "nlp-team", "vision-leads", "unknown"])
    assert role is None
    assert dict(projects) == {"vision": ProjectRole.MAINTAINER, "nlp": ProjectRole.ENGINEER}


def test_a_global_role_comes_from_the_star_key() -> None:
    """`"*"` names the global role (READER or ADMIN); ADMIN wins over READER; no group: nothing at all."""
    grants = GroupGrants.parse(MAPPING)
    assert grants.resolve(["everyone"]) == (Role.READER, {})
    assert grants.resolve(["everyone", "platform"])[0] is Role.ADMIN
    assert grants.resolve([]) == (None, {})


def test_resolved_grants_are_immutable() -> None:
    """The grants handed to a Principal cannot be changed by whoever holds them."""
    _, projects = GroupGrants.parse(MAPPING).resolve(["vision-team"])
    assert isinstance(projects, MappingProxyType)
    with pytest.raises(TypeError):
        projects["vision"] = ProjectRole.MAINTAINER  # type: ignore[index]


def test_json_text_parses_like_the_mapping() -> None:
    """The environment variable's JSON text gives the same mapping; empty means no grants."""
    import json

    assert GroupGrants.parse(json.dumps(MAPPING)).resolve(["vision-team"]) == GroupGrants.parse(
        MAPPING
    ).resolve(["vision-team"])
    assert GroupGrants.parse("").resolve(["vision-team"]) == (None, {})


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("{not json", "not JSON"),
        ("[]", "JSON object"),
        ({"g": "vision"}, "expected an object"),
        ({"g": {"vision": "OWNER"}}, "READER, ENGINEER, MAINTAINER"),
        ({"g": {"*": "ENGINEER"}}, "READER or ADMIN"),
        ({"g": {"*": "MAINTAINER"}}, "READER or ADMIN"),
    ],
)
def test_mistakes_are_refused_with_the_reason(raw: object, says: str) -> None:
    """A malformed mapping or an unknown role is a configuration error naming what is wrong."""
    with pytest.raises(OidcConfigError, match=says):
        GroupGrants.parse(raw)  # type: ignore[arg-type]
