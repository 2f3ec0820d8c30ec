"""Aggregation pipelines over download events: per-model totals, stats, and the rollups behind them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from bson import ObjectId

from .documents import DownloadEvent, DownloadStatus


@dataclass(frozen=True, slots=True)
class ModelDownloadTotals:
    completed: int
    last_downloaded_at: datetime | None


async def model_download_totals(model_ids: Sequence[ObjectId]) -> list[ModelDownloadTotals]:
    """Completed downloads and the last one's time for many models in one aggregation (a DataLoader batch)."""
    pipeline = [
        {"$match": {"model_id": {"$in": list(model_ids)}, "status": DownloadStatus.COMPLETED.value}},
        {"$group": {"_id": "$model_id", "n": {"$sum": 1}, "last": {"$max": "$finished_at"}}},
    ]
    rows = await DownloadEvent.get_pymongo_collection().aggregate(pipeline)
    found = {row["_id"]: ModelDownloadTotals(row["n"], row["last"]) async for row in rows}
    return [found.get(mid, ModelDownloadTotals(0, None)) for mid in model_ids]
