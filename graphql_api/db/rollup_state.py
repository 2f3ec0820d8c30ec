"""Owner of `rollup_state`: the roller's one document, its lease and its watermark.

`{_id: "roller", holder, expires_at, wanted_by, wanted_until, watermark, applying}`:

- the lease: only `holder` folds stages into the rollups, until `expires_at` (renewed every fold); a holder
  that dies is replaced once it expires. `wanted_by` (until `wanted_until`) is a claim by someone who must
  hold it next (`modelhub rebuild-rollups`): no other process takes or renews the lease meanwhile, so the
  holder gives it up after its current fold;
- the watermark: every stage staged at or before `watermark` is in the rollups (a stage later than the lag
  excepted, see analytics/roller.py); `applying` is the target of a fold under way (its buckets are being
  written): a fold that died is finished to the same target by whoever holds the lease next.

Every change is one conditional update on this document (no findAndModify: SecantusDB 0.7 scans the whole
collection for one; here it holds one document, but the rule is kept).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.errors import DuplicateKeyError

from ..documents import DownloadRollup, utcnow

COLLECTION = "rollup_state"
ROLLER = "roller"
# Where a new database's watermark starts: every event staged since is folded (events recorded before the
# roller existed carry no stages: they were counted when they were written).
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class RollerState:
    holder: str | None
    expires_at: datetime
    watermark: datetime
    applying: datetime | None
    wanted_by: str | None
    wanted_until: datetime | None


def _collection() -> Any:
    return DownloadRollup.get_pymongo_collection().database[COLLECTION]


async def ensure() -> None:
    """Creates the document when missing (a lost race is a DuplicateKeyError, and nothing to do)."""
    empty = {
        "_id": ROLLER,
        "holder": None,
        "expires_at": EPOCH,
        "watermark": EPOCH,
        "applying": None,
        "wanted_by": None,
        "wanted_until": None,
    }
    with contextlib.suppress(DuplicateKeyError):
        await _collection().insert_one(empty)


async def read() -> RollerState:
    doc = await _collection().find_one({"_id": ROLLER})
    if doc is None:
        await ensure()
        doc = await _collection().find_one({"_id": ROLLER})
        assert doc is not None
    return RollerState(
        doc.get("holder"),
        doc.get("expires_at") or EPOCH,
        doc.get("watermark") or EPOCH,
        doc.get("applying"),
        doc.get("wanted_by"),
        doc.get("wanted_until"),
    )


async def watermark() -> datetime:
    """The watermark alone (what a reader needs: stages after it may not be in the rollups yet)."""
    doc = await _collection().find_one({"_id": ROLLER}, {"watermark": 1})
    return (doc or {}).get("watermark") or EPOCH


async def acquire(holder: str, seconds: float, *, wanting: bool = False) -> bool:
    """Takes or renews the lease for `seconds`: when `holder` has it, nobody has, or it has expired, and
    nobody else wants it next (`wanting`: `holder` is the one who claimed it with `want`)."""
    now = utcnow()
    free: list[dict[str, Any]] = [{"holder": holder}, {"holder": None}, {"expires_at": {"$lt": now}}]
    flt: dict[str, Any] = {"_id": ROLLER, "$or": free}
    if not wanting:
        flt["$and"] = [{"$or": [{"wanted_by": None}, {"wanted_by": holder}, {"wanted_until": {"$lt": now}}]}]
    update = {"$set": {"holder": holder, "expires_at": now + timedelta(seconds=seconds)}}
    return bool((await _collection().update_one(flt, update)).matched_count)


async def release(holder: str) -> None:
    """Gives the lease up at once (when `holder` has it)."""
    await _collection().update_one(
        {"_id": ROLLER, "holder": holder}, {"$set": {"holder": None, "expires_at": EPOCH}}
    )


async def want(holder: str, seconds: float) -> None:
    """Claims the lease next for `seconds` (renewed by calling again): the holder gives it up after its
    fold."""
    until = utcnow() + timedelta(seconds=seconds)
    await _collection().update_one({"_id": ROLLER}, {"$set": {"wanted_by": holder, "wanted_until": until}})


async def unwant(holder: str) -> None:
    await _collection().update_one(
        {"_id": ROLLER, "wanted_by": holder}, {"$set": {"wanted_by": None, "wanted_until": None}}
    )


async def begin(holder: str, watermark: datetime, target: datetime) -> bool:
    """Records that `holder` (holding the lease) is folding (watermark, target]: False when the lease or the
    watermark changed, or a fold is already under way."""
    flt = {
        "_id": ROLLER,
        "holder": holder,
        "expires_at": {"$gt": utcnow()},
        "watermark": watermark,
        "applying": None,
    }
    return bool((await _collection().update_one(flt, {"$set": {"applying": target}})).matched_count)


async def advance(
    watermark: datetime, target: datetime, applying: datetime | None, holder: str | None = None
) -> bool:
    """Moves the watermark from `watermark` to `target` once the fold to `target` is written (`applying`: the
    target recorded by `begin`; None, with the lease's `holder`, for a fold that had nothing to write);
    False when someone else moved it."""
    flt: dict[str, Any] = {"_id": ROLLER, "watermark": watermark, "applying": applying}
    if holder is not None:
        flt["holder"] = holder
    update = {"$set": {"watermark": target, "applying": None}}
    return bool((await _collection().update_one(flt, update)).matched_count)
