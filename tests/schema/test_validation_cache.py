"""Parsing and validation are cached for real: a repeated operation is validated once."""

from __future__ import annotations

import uuid

from strawberry.extensions.validation_cache import _get_validate_cache

from tests.servers import GraphQLClient


async def test_a_repeated_operation_is_validated_once(gql: GraphQLClient) -> None:
    """Five identical operations: one validation (a cache miss), then four cache hits; the limit rules are
    built once, so they do not give the cache a new key per request."""
    cache = _get_validate_cache(256)
    query = f"{{ x{uuid.uuid4().hex}: models {{ totalCount }} }}"  # never validated before in this run
    before = cache.cache_info()
    for _ in range(5):
        await gql(query)
    after = cache.cache_info()
    assert (after.misses - before.misses, after.hits - before.hits) == (1, 4)
