"""Catalogue pages of `models` from an in-memory ordered index of every model's keys, kept true by the
model cache's change stream.

SecantusDB reads a whole index range before it applies a limit, and no single index serves a name prefix
in date order, so a page from the database cost the number of matching names (146 ms for a prefix matching
1,111 names at 3,000 models against 15 ms for one matching 111). Here every order is a sorted list of keys
(`bisect`), and so is every project, owner and tag, and every name prefix a page has asked for: a page
is a walk from the cursor's position in the smallest list that the filter implies, checking the rest of
the filter on the way, so it costs the page (plus what the other conditions of a combined filter skip),
never the registry size or the number of matches. The page's documents then come from the model cache by
name (one database read for those it does not hold); `totalCount` walks the matches only when asked.

Kept true the same way as the model cache (model_cache.py):
- It is served only while the change stream is open; before its first load and whenever the stream is
  down, pages are read from the database as before (db/models.py).
- Ids the stream reports are re-read (one `$in` read) before the next page is served, so a page reflects
  every change reported before it began.
- A mutation of this process reports when it started (`written`); before the next page, models updated
  since then are re-read from the `updated_at` index, so a caller pages over its own write at once even
  before the stream reports it. Every write that changes an indexed key (a new model, tags, a new
  version) moves `updated_at` (name, project and owner never change).
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import itertools
import logging
import time
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .catalogue_lists import Entry, Key, Lists, grouped, key_value, matcher
from .db import models as models_db
from .pagination import PageRequest, decode_cursor, encode_cursor
from .queries import ModelOrder, ModelOrderField, ModelQuery

log = logging.getLogger(__name__)

# A name prefix matching at most this many names is answered by sorting its matches (bounded work);
# above it, the prefix gets lists of its own, kept for the next pages while it is among the recent ones.
GATHER_LIMIT = 256
PREFIX_LISTS = 64
PREFIX_SHARE = 2
# Changes reported by the stream that a page applies itself (one read) before it is served; more are
# applied by a task of their own (READ_IDS at a time), and above RELOAD_IDS by reading everything again.
INLINE_IDS = 256
READ_IDS = 1000
RELOAD_IDS = 5000
# A registration starts that task at most this often (its hint of which names exist: registration.py).
WARM_SECONDS = 1.0
# More lists than this (of projects or owners named by a filter) are not merged: the whole order is walked.
MERGE_LISTS = 64


@dataclass
class CataloguePage:
    """A page of model names with their cursors, as `Page` has them, and a count on demand."""

    names: list[tuple[str, str]]
    has_next: bool
    has_previous: bool
    count: Callable[[], int]


class Catalogue:
    """Every model's keys, in memory, ordered every way a page asks for."""

    def __init__(self) -> None:
        self._by_id: dict[Any, Entry] = {}
        self._by_name: dict[str, Entry] = {}
        self._all = Lists()
        self._projects: dict[str, Lists] = {}
        self._owners: dict[str, Lists] = {}
        self._tags: dict[str, Lists] = {}
        self._prefixes: OrderedDict[str, Lists] = OrderedDict()
        self._live = False
        self._loaded = False
        self._pending: set[Any] = set()
        self._reload = True
        self._written_since: datetime | None = None
        self._lock = asyncio.Lock()
        self._settling: asyncio.Task[None] | None = None
        self._warmed_at = -WARM_SECONDS
        # Entries looked at by pages since start: what a test checks a page's cost by.
        self.examined = 0

    @property
    def live(self) -> bool:
        return self._live

    @property
    def settled(self) -> bool:
        """Loaded, with every change reported so far applied."""
        return self._loaded and not self._behind

    @property
    def _behind(self) -> bool:
        """Changes reported (or written by this process) that are not applied yet."""
        return bool(self._reload or self._pending or self._written_since is not None)

    @property
    def loaded(self) -> bool:
        """Live and loaded once: it holds every model but those whose changes are still to apply."""
        return self._live and self._loaded

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    # --- kept true by the change stream -------------------------------------------------------------

    def opened(self) -> None:
        """The stream is open: load everything (again) before the next page; changes from now are kept."""
        self._live, self._loaded, self._reload = True, False, True
        self._pending.clear()

    def closed(self) -> None:
        """The stream failed (or the app stops): pages come from the database until it is open and
        loaded again."""
        self._live = False
        if self._settling is not None:
            self._settling.cancel()

    def changed(self, model_id: Any | None) -> None:
        """A change the stream reported (None: the collection as a whole): re-read before the next page."""
        if model_id is None:
            self._reload = True
        else:
            self._pending.add(model_id)

    def written(self, since: datetime) -> None:
        """A mutation of this process that started at `since` ended: re-read what it may have changed."""
        if self._written_since is None or since < self._written_since:
            self._written_since = since

    async def ready(self) -> bool:
        """True when pages may be served from memory, after applying every change reported so far.

        A few changes are applied at once (one read); more (a first load, a burst written elsewhere) are
        applied by a task of their own, and pages come from the database meanwhile: a request never
        pays for reading the registry."""
        if not self._live:
            return False
        if self._behind:
            if self._reload or len(self._pending) > INLINE_IDS or self._lock.locked():
                self._settle_later()
                return False
            await self._settle_locked()
        return self._live and self._loaded and not self._reload

    def warm(self) -> None:
        """Applies what changed so far (the first load too) in a task of its own, at most once per
        `WARM_SECONDS` and unless one runs: no caller waits for it. Registrations call it, so the names they
        hint by stay within about a second of current even when no page is asked."""
        now = time.monotonic()
        if self._live and self._behind and now - self._warmed_at >= WARM_SECONDS and self._settle_later():
            self._warmed_at = now

    def _settle_later(self) -> bool:
        """Starts a settle in a task of its own unless one runs; True when this call started it. A context
        of its own: not under the deadline of the request that started it."""
        if self._settling is not None and not self._settling.done():
            return False
        self._settling = asyncio.create_task(self._settle_in_background(), context=contextvars.Context())
        return True

    async def _settle_in_background(self) -> None:
        try:
            await self._settle_locked()
        except Exception as exc:  # the next page tries again; pages come from the database meanwhile
            log.warning("the catalogue could not read the models' changes (%s)", type(exc).__name__)

    async def _settle_locked(self) -> None:
        async with self._lock:
            try:
                await self._settle()
            except Exception:
                self._reload = True  # what was taken from the queue may be lost: read everything again
                raise

    async def _settle(self) -> None:
        if len(self._pending) > RELOAD_IDS:
            self._reload = True
        if self._reload:
            self._reload, self._written_since = False, None
            self._pending.clear()  # the full read below sees them
            docs = await models_db.model_keys()
            self._replace(docs)
            self._loaded = True
        if self._written_since is not None:
            # Mongo keeps milliseconds: a write in the same millisecond as `since` is stored below it.
            since, self._written_since = self._written_since, None
            for doc in await models_db.model_keys(updated_since=since - timedelta(milliseconds=1)):
                self._put(Entry.of(doc))
        # The changes reported so far, not those arriving meanwhile: under a stream of writes the loop ends.
        reported = list(self._pending)
        self._pending.difference_update(reported)
        for start in range(0, len(reported), READ_IDS):
            ids = reported[start : start + READ_IDS]
            found = {doc["_id"]: doc for doc in await models_db.model_keys(ids=ids)}
            for model_id in ids:
                held = found.get(model_id)
                if held is None:
                    self._drop(model_id)
                else:
                    self._put(Entry.of(held))

    def _replace(self, docs: list[dict[str, Any]]) -> None:
        entries = [Entry.of(d) for d in docs]
        self._by_id = {e.id: e for e in entries}
        self._by_name = {e.name: e for e in entries}
        self._all = Lists(entries)
        self._projects = grouped(entries, lambda e: [e.project_name])
        self._owners = grouped(entries, lambda e: [e.owner])
        self._tags = grouped(entries, lambda e: list(e.tags))
        self._prefixes.clear()

    def _put(self, entry: Entry) -> None:
        old = self._by_id.get(entry.id)
        if old == entry:
            return
        if old is not None:
            self._drop(old.id)
        self._by_id[entry.id] = entry
        self._by_name[entry.name] = entry
        for lists in self._lists_of(entry, create=True):
            lists.add(entry)

    def _drop(self, model_id: Any) -> None:
        old = self._by_id.pop(model_id, None)
        if old is None:
            return
        self._by_name.pop(old.name, None)
        for lists in self._lists_of(old, create=False):
            lists.remove(old)

    def _lists_of(self, entry: Entry, create: bool) -> Iterator[Lists]:
        """Every set of lists `entry` belongs in."""
        yield self._all
        for groups, value in itertools.chain(
            [(self._projects, entry.project_name), (self._owners, entry.owner)],
            ((self._tags, t) for t in entry.tags),
        ):
            found = groups.get(value)
            if found is None and create:
                found = groups[value] = Lists()
            if found is not None:
                yield found
        for end in range(len(entry.name) + 1):
            held = self._prefixes.get(entry.name[:end])
            if held is not None:
                yield held

    # --- pages --------------------------------------------------------------------------------------

    def page(self, query: ModelQuery, order: ModelOrder, request: PageRequest) -> CataloguePage:
        """One page of the models matching `query` in `order`: the same rows and cursors as the
        database's keyset page (db/paging.py), so a cursor from either continues on the other."""
        query.validate()
        limit, cursor = request.size, request.cursor
        field = order.field
        arity = 1 if field is ModelOrderField.NAME else 2
        after = None
        if cursor is not None:
            after = tuple(key_value(v) for v in decode_cursor(cursor, order.key, arity))
        descending = order.descending != request.backward
        keep = matcher(query)
        rows: list[Entry] = []
        for key in self._walk(query, field, descending, after):
            entry = self._entry(field, key)
            self.examined += 1
            if keep(entry):
                rows.append(entry)
                if len(rows) > limit:
                    break
        more = len(rows) > limit
        rows = rows[:limit]
        if request.backward:
            rows.reverse()
        names = [(e.name, encode_cursor(order.key, list(e.key(field)))) for e in rows]

        def count() -> int:
            return sum(1 for key in self._walk(query, field, False, None) if keep(self._entry(field, key)))

        if request.backward:
            return CataloguePage(names, has_next=cursor is not None, has_previous=more, count=count)
        return CataloguePage(names, has_next=more, has_previous=cursor is not None, count=count)

    def _entry(self, field: ModelOrderField, key: Key) -> Entry:
        return self._by_name[key[0]] if field is ModelOrderField.NAME else self._by_id[key[1]]

    def _walk(
        self, query: ModelQuery, field: ModelOrderField, descending: bool, after: Key | None
    ) -> Iterator[Key]:
        """Keys in order from the smallest set of lists the filter implies (the rest is checked by the
        caller): the named models, the name prefix, the projects, the owners, a tag, or all."""
        if query.names:
            chosen = sorted(
                (e.key(field) for n in set(query.names) if (e := self._by_name.get(n)) is not None),
                reverse=descending,
            )
            return (k for k in chosen if after is None or (k < after if descending else k > after))
        sources: list[list[Lists]] = []
        if query.name_prefix:
            prefix = self._prefix_lists(query.name_prefix, field)
            if prefix is None:
                return self._gathered(query.name_prefix, field, descending, after)
            sources.append([prefix])
        for groups, values in ((self._projects, query.project_names), (self._owners, query.owners)):
            if values:  # any of them: their lists merged
                lists = [g for v in set(values) if (g := groups.get(v)) is not None]
                # Merging many lists costs more per page than skipping what the filter drops (a caller
                # without a global role reads every INTERNAL project: 1,000 lists took 9 ms a page).
                sources.append(lists if len(lists) <= MERGE_LISTS else [self._all])
        if query.tags:  # all of them: the smallest tag's list, the others checked
            tagged = [g for t in set(query.tags) if (g := self._tags.get(t)) is not None]
            sources.append([min(tagged, key=len)] if len(tagged) == len(set(query.tags)) else [])
        if not sources:
            return self._all.walk(field, descending, after)
        best = min(sources, key=lambda lists: sum(len(g) for g in lists))
        walks = [g.walk(field, descending, after) for g in best]
        if len(walks) == 1:
            return walks[0]
        return heapq.merge(*walks, reverse=descending)

    def _prefix_range(self, prefix: str) -> tuple[int, int]:
        names = self._all.by_order[ModelOrderField.NAME]
        return bisect_left(names, (prefix,)), bisect_left(names, (prefix + "\U0010ffff",))

    def _prefix_lists(self, prefix: str, field: ModelOrderField) -> Lists | None:
        """Lists of the names under `prefix` in every order: None when they are few enough to sort, or
        the order is by name (the name list holds them as a range)."""
        held = self._prefixes.get(prefix)
        if held is not None:
            self._prefixes.move_to_end(prefix)
            return held
        start, end = self._prefix_range(prefix)
        if field is ModelOrderField.NAME or end - start <= GATHER_LIMIT:
            return None
        names = self._all.by_order[ModelOrderField.NAME][start:end]
        self.examined += len(names)  # built once, then kept with the other lists
        lists = self._prefixes[prefix] = Lists(self._by_name[n] for (n,) in names)
        # At most PREFIX_LISTS prefixes, holding at most PREFIX_SHARE times the registry between them.
        budget = PREFIX_SHARE * len(self._by_id)
        while len(self._prefixes) > PREFIX_LISTS or sum(map(len, self._prefixes.values())) > budget:
            self._prefixes.popitem(last=False)
        return lists

    def _gathered(
        self, prefix: str, field: ModelOrderField, descending: bool, after: Key | None
    ) -> Iterator[Key]:
        start, end = self._prefix_range(prefix)
        names = self._all.by_order[ModelOrderField.NAME]
        if field is ModelOrderField.NAME:
            if descending:
                if after is not None:
                    end = min(end, bisect_left(names, after))
                return (names[i] for i in range(end - 1, start - 1, -1))
            if after is not None:
                start = max(start, bisect_right(names, after))
            return (names[i] for i in range(start, end))
        self.examined += end - start  # at most GATHER_LIMIT
        keys = sorted((self._by_name[n].key(field) for (n,) in names[start:end]), reverse=descending)
        return (k for k in keys if after is None or (k < after if descending else k > after))
