"""The collection owners, and the one database set-up (client + Beanie) shared by app, CLI, bench, tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from beanie import init_beanie
from pymongo import AsyncMongoClient

from ..documents import ALL_DOCUMENTS
from . import migrations


@contextlib.asynccontextmanager
async def connect(uri: str, db_name: str, **options: Any) -> AsyncIterator[AsyncMongoClient[Any]]:
    """A client on `uri` with the data migrated and Beanie initialised on `db_name` (indexes created);
    closed on exit. The embedded SecantusDB's URI turns retryable writes off (see embedded.py: SecantusDB
    0.7 sorts all its retryable-write records on every write once they pass 10,000)."""
    client: AsyncMongoClient[Any] = AsyncMongoClient(
        uri, tz_aware=True, **{"serverSelectionTimeoutMS": 10_000, **options}
    )
    try:
        await migrations.run(client[db_name])
        await init_beanie(database=client[db_name], document_models=ALL_DOCUMENTS)
        yield client
    finally:
        await client.close()
