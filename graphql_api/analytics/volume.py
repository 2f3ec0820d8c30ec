"""How many raw events a range holds, estimated from the daily rollups' counts: what prices a raw scan by
the events it will read (schema/cost.py) without reading them. Kept in memory per instance and refreshed in
the background, so pricing stays a pure function of the document, its variables and this snapshot."""

from __future__ import annotations

import asyncio
import logging
import math
from datetime import datetime, timedelta

from pymongo.errors import PyMongoError

from ..db import rollups as rollups_db
from ..health import pause

log = logging.getLogger("modelhub.analytics")
DAY = timedelta(days=1)
REFRESH_SECONDS = 60.0


class EventVolume:
    """Events per UTC day, as the rollups counted them when last refreshed (empty until then)."""

    def __init__(self) -> None:
        self.days: dict[datetime, int] = {}
        self.loaded = False

    def estimate(self, since: datetime | None, until: datetime | None) -> int:
        """The events that started in [since, until) (open ends: all of them on that side), a partial day
        counted pro rata (rounded up)."""
        total = 0
        for day, count in self.days.items():
            start = day if since is None else max(day, since)
            end = day + DAY if until is None else min(day + DAY, until)
            if end > start:
                total += math.ceil(count * ((end - start) / DAY))
        return total

    def first_day(self) -> datetime | None:
        """The earliest UTC day the rollups counted an event on (None: none counted, or not read yet)."""
        return min((day for day, count in self.days.items() if count > 0), default=None)

    async def refresh(self) -> None:
        """Reads the counts again; on a database error the last ones stay (and pricing with them)."""
        try:
            self.days = await rollups_db.downloads_by_day()
            self.loaded = True
        except PyMongoError as exc:
            log.info("event counts not refreshed: %s", type(exc).__name__)

    async def run(self, stopped: asyncio.Event, seconds: float = REFRESH_SECONDS) -> None:
        """Refreshes every `seconds` until `stopped` is set (the first time after `seconds`: the app's
        start-up refreshes once before serving)."""
        while True:
            await pause(stopped, seconds)
            if stopped.is_set():
                return
            await self.refresh()
