"""Models by name from memory, kept true by a change stream: the registry is read far more than written.

A query for `model(name)` cost a database round trip that was a third of the app's CPU per request. The
cache keeps the documents that queries read, and forgets one the moment any writer changes it:

- A change stream on `models` reports every insert, update and delete, by every instance. Only while that
  stream is open is anything cached or served from memory; when it fails the cache empties and is bypassed
  until the stream is open again (it reopens with a backoff, and since events may have been missed in
  between, it starts empty).
- A read fills the cache only if no change arrived while it was reading (an epoch counter), so a read that
  raced a write can never leave the older document behind.
- A mutation in this process empties the cache when it ends, so a caller sees its own write at once; other
  instances see it when the change reaches them (a round trip on the database).
- Mutations and subscriptions never read from it (the edge asks only for query operations), and entries
  also expire after `ttl` as a last guard. Misses are not cached: a name registered elsewhere appears at
  once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from .catalogue import Catalogue
from .db import models as models_db
from .documents import RegisteredModel
from .metrics import Metrics

log = logging.getLogger(__name__)

RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0)


class ModelCache:
    """Up to `entries` models by name (least recently used first out); `entries=0` turns it off."""

    def __init__(self, metrics: Metrics, entries: int, ttl: float) -> None:
        self._metrics = metrics
        self._capacity = entries
        self._ttl = ttl
        self._entries: OrderedDict[str, tuple[RegisteredModel, float]] = OrderedDict()
        self._names: dict[Any, str] = {}  # model _id -> name, to forget a model its change names by _id
        self._epoch = 0
        self._live = False
        # Every model's keys in order, for catalogue pages (catalogue.py); kept by the same stream.
        self.catalogue = Catalogue()

    @property
    def live(self) -> bool:
        """True while the change stream is open: only then is anything served from memory."""
        return self._live

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, name: str) -> RegisteredModel | None:
        """The model `name` (None if there is none): from memory when held, else read and kept."""
        return (await self.get_many([name])).get(name)

    async def get_many(self, names: Iterable[str]) -> dict[str, RegisteredModel]:
        """The models among `names` that exist, by name; one database read for those not held."""
        wanted = list(dict.fromkeys(names))
        if not self._live:
            self._metrics.model_cache_lookups.labels("bypass").inc(len(wanted))
            return await models_db.find_models(wanted)
        now = time.monotonic()
        found: dict[str, RegisteredModel] = {}
        missing: list[str] = []
        for name in wanted:
            held = self._entries.get(name)
            if held is not None and held[1] > now:
                self._entries.move_to_end(name)
                found[name] = held[0]
            else:
                missing.append(name)
        self._metrics.model_cache_lookups.labels("hit").inc(len(found))
        if missing:
            self._metrics.model_cache_lookups.labels("miss").inc(len(missing))
            epoch = self._epoch
            read = await models_db.find_models(missing)
            found.update(read)
            if self._live and self._epoch == epoch:  # nothing changed while it was being read
                for model in read.values():
                    self._keep(model, now + self._ttl)
        return found

    def _keep(self, model: RegisteredModel, until: float) -> None:
        self._entries[model.name] = (model, until)
        self._entries.move_to_end(model.name)
        self._names[model.id] = model.name
        while len(self._entries) > self._capacity:
            _, (old, _) = self._entries.popitem(last=False)
            self._names.pop(old.id, None)

    def forget(self, model_id: Any | None) -> None:
        """Drops the model with this `_id` (everything when None); reads in flight will not be kept."""
        self._epoch += 1
        if model_id is None:
            self._entries.clear()
            self._names.clear()
            return
        name = self._names.pop(model_id, None)
        if name is not None:
            self._entries.pop(name, None)

    def changed(self, model_id: Any | None) -> None:
        """A change the stream reported (`_id`, or None for the whole collection)."""
        self.forget(model_id)
        self.catalogue.changed(model_id)

    def clear(self) -> None:
        """Forgets everything: after a mutation of this process, so its caller reads its own write."""
        self.forget(None)

    def wrote(self, since: datetime) -> None:
        """A mutation of this process that started at `since` ended: its caller reads its own write."""
        self.clear()
        self.catalogue.written(since)

    async def run(self) -> None:
        """Follows the change stream until cancelled, reopening it (empty) after a failure."""
        if self._capacity <= 0:
            return
        failures = 0
        while True:
            try:
                async for model_id in models_db.watch_model_changes(self._opened):
                    failures = 0
                    self.changed(model_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is out: bypass until the stream is open again
                if self._live or failures == 0:
                    log.warning(
                        "the model cache's change stream failed (%s): models are read uncached "
                        "until it reopens",
                        type(exc).__name__,
                    )
            finally:
                self._live = False
                self.catalogue.closed()
                self.clear()
            delay = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
            failures += 1
            await asyncio.sleep(delay)

    def _opened(self) -> None:
        self.clear()
        self._live = True
        self.catalogue.opened()
