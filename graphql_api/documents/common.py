"""The clock every document's timestamps come from."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    # Mongo keeps milliseconds; truncating here keeps in-memory and stored values equal.
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)
