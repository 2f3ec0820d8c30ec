"""Token resolution: the cache of tokens in use survives a flood of made-up tokens."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from starlette.applications import Starlette

from graphql_api import auth
from graphql_api.db import tokens as tokens_db
from graphql_api.errors import Unauthenticated
from graphql_api.roles import Role


@pytest.mark.parametrize("store_kind", ["local"])
async def test_made_up_tokens_do_not_evict_tokens_in_use(
    app: Starlette, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More made-up tokens than the cache holds are each refused (one lookup each, none when repeated),
    and a token in use keeps its cache entry throughout: it is not looked up again."""
    lookups: list[str] = []
    by_hash = tokens_db.by_hash

    async def counted(digest: str) -> Any:
        lookups.append(digest)
        return await by_hash(digest)

    monkeypatch.setattr(tokens_db, "by_hash", counted)
    monkeypatch.setattr(auth, "MAX_CACHED_TOKENS", 50)
    value, _ = await auth.create_token("t-in-use", "alice", Role.READER, "test")
    resolver = auth.Authenticator("token", cache_seconds=300)
    assert (await resolver.from_token(value)).engineer == "alice"
    made_up = [f"mh_{secrets.token_urlsafe(32)}" for _ in range(120)]
    for token in made_up:
        with pytest.raises(Unauthenticated):
            await resolver.from_token(token)
    with pytest.raises(Unauthenticated):
        await resolver.from_token(made_up[-1])  # refused again from the cache
    assert (await resolver.from_token(value)).engineer == "alice"
    assert len(lookups) == 1 + len(made_up)
