"""Persisted operations: GraphQL documents registered by the SHA-256 of their text (Apollo's persisted-query
shape), and the policy that decides whether an operation not registered may run.

Modes (`MODELHUB_PERSISTED_OPERATIONS`): `off` runs any operation and resolves registered hashes; `audit`
does the same and logs (and counts) each operation that is not registered; `enforce` runs registered
operations only. The text of an operation is checked against the schema at the edge before it gets here.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from enum import StrEnum

from . import codes
from .db import operations as operations_db
from .documents import PersistedOperation
from .errors import DomainError
from .metrics import Metrics

log = logging.getLogger("modelhub")


class PersistedMode(StrEnum):
    OFF = "off"
    AUDIT = "audit"
    ENFORCE = "enforce"


class PersistedQueryNotFound(DomainError):
    """An unregistered hash. Apollo's clients look for this message and code, then resend the text."""

    code = codes.PERSISTED_QUERY_NOT_FOUND
    text = "PersistedQueryNotFound"


class OperationNotPersisted(DomainError):
    code = codes.OPERATION_NOT_PERSISTED
    text = (
        "this server runs registered operations only: register it with "
        "`modelhub operations push FILE` and send its hash as extensions.persistedQuery.sha256Hash"
    )


class PersistedHashMismatch(DomainError):
    code = codes.PERSISTED_QUERY_HASH_MISMATCH
    text = "extensions.persistedQuery.sha256Hash is not the SHA-256 of the query sent with it"


class MalformedPersistedQuery(DomainError):
    code = codes.BAD_REQUEST
    text = "extensions.persistedQuery.sha256Hash must be a hex SHA-256"


def sha256_of(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()


@dataclass
class Registry:
    """The registered hashes this process knows (loaded at start-up, grown by registrations and by misses
    found in the database, so another worker's registration is seen at once)."""

    metrics: Metrics
    mode: PersistedMode = PersistedMode.OFF
    known: dict[str, str] = field(default_factory=dict)
    # Misses are looked up in the database (another worker may have registered the operation), at most this
    # many a second: a flood of unknown texts, which needs no token, costs no more database reads than that.
    misses_per_second: float = 20.0
    _allowance: float = 0.0
    _checked_at: float = 0.0

    async def load(self) -> None:
        self.known.update(await operations_db.all_hashes())

    async def lookup(self, sha256: str) -> str | None:
        body = self.known.get(sha256)
        if body is None and self._may_ask_database() and (found := await operations_db.by_hash(sha256)):
            body = self.known[sha256] = found.body
        return body

    def _may_ask_database(self) -> bool:
        """A token bucket of `misses_per_second` (burst as large) for database look-ups of misses."""
        now = time.monotonic()
        rate = self.misses_per_second
        self._allowance = min(rate, self._allowance + (now - self._checked_at) * rate)
        self._checked_at = now
        if self._allowance < 1:
            return False
        self._allowance -= 1
        return True

    async def resolve(self, query: str | None, sha256: str | None) -> str | None:
        """The text to run for a request carrying `query` and/or a persisted-query hash, or a DomainError."""
        count = self.metrics.persisted.labels
        if sha256 is not None:
            if query is not None and sha256_of(query) != sha256.lower():
                count("hash_mismatch").inc()
                raise PersistedHashMismatch()
            body = await self.lookup(sha256.lower())
            if body is not None:
                count("registered").inc()
                return body
            if query is None:
                count("unknown_hash").inc()
                raise PersistedQueryNotFound()
        if query is None or self.mode is PersistedMode.OFF:
            return query  # no query at all: Strawberry's own error follows
        if await self.lookup(sha256_of(query)) is not None:
            count("registered").inc()
            return query
        if self.mode is PersistedMode.ENFORCE:
            count("refused").inc()
            raise OperationNotPersisted()
        count("unregistered").inc()
        log.warning("audit: an operation that is not registered ran (sha256 %s)", sha256_of(query))
        return query

    async def resolve_request(self, query: str | None, extensions: object) -> str | None:
        """`resolve` for one request as a client sends it (over HTTP or a WebSocket): the hash, if any, is
        read from `extensions.persistedQuery.sha256Hash` (Apollo's shape)."""
        persisted = extensions.get("persistedQuery") if isinstance(extensions, dict) else None
        sha256 = persisted.get("sha256Hash") if isinstance(persisted, dict) else None
        if persisted is not None and not (isinstance(sha256, str) and len(sha256) == 64):
            raise MalformedPersistedQuery()
        return await self.resolve(query, sha256)

    def ship(self, body: str) -> str:
        """Knows an operation this repo ships (the /ui page's, the SDK's) in memory only: every instance
        ships the same ones, so they need no database write at each start."""
        sha256 = sha256_of(body)
        self.known[sha256] = body
        return sha256

    async def register(self, body: str, name: str | None, source: str) -> tuple[str, bool]:
        """Stores `body` (already checked against the schema); returns its hash and whether it is new."""
        sha256 = sha256_of(body)
        if sha256 in self.known:
            return sha256, False
        created = await operations_db.insert(
            PersistedOperation(id=sha256, body=body, name=name, source=source)
        )
        self.known[sha256] = body
        return sha256, created
