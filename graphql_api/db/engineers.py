"""Owner of `engineer_numbers`: a small dense number for each engineer name, so that a rollup bucket keeps its
unique engineers as a bitmap instead of an array of names.

A bucket's names made most of its size (about 480 names, 2.2 KB of a daily bucket at 1,000,000 demo events),
and SecantusDB's cost of reading a bucket grows with its size: 30 days of daily buckets took 700 ms to read
with the names and about half without. A bitmap of 500 engineers is 8 words. A bucket stores its bitmap as
`engineer_bits: {"<word index>": <signed 64-bit word>}`, written with `$bit: {or}` (SecantusDB 0.7 creates a
missing word as 0 first, like MongoDB), so concurrent writers never lose a bit.

Numbers are given out by a counter document (`$inc` on a one-document collection: cheap even where
SecantusDB scans for a findAndModify) and kept by an insert keyed on the name, so two writers that number the
same new name at once agree on the winner's number (the loser's number is skipped, which costs nothing).
A number, once given, never changes: each client keeps what it has read in memory.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

from bson.int64 import Int64
from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

NUMBERS = "engineer_numbers"
SEQUENCES = "sequences"
WORD = 64


class EngineerNumbers:
    """The engineer → number map of one database, with what this process has already read."""

    def __init__(self, db: AsyncDatabase[Any]) -> None:
        self.client = db.client
        self._numbers = db[NUMBERS]
        self._sequences = db[SEQUENCES]
        self._known: dict[str, int] = {}
        self._sequence_ready = False

    async def numbers(self, names: Iterable[str]) -> dict[str, int]:
        """The number of each name, giving new names the next free numbers."""
        wanted = set(names)
        missing = [name for name in wanted if name not in self._known]
        if missing:
            async for doc in self._numbers.find({"_id": {"$in": missing}}):
                self._known[doc["_id"]] = int(doc["n"])
            for name in sorted(set(missing) - self._known.keys()):
                self._known[name] = await self._assign(name)
        return {name: self._known[name] for name in wanted}

    async def _assign(self, name: str) -> int:
        if not self._sequence_ready:
            # Not an upsert: SecantusDB 0.7 loses increments under concurrent upserts (see db/rollups/).
            with contextlib.suppress(DuplicateKeyError):
                await self._sequences.insert_one({"_id": "engineer", "n": 0})
            self._sequence_ready = True
        seq = await self._sequences.find_one_and_update(
            {"_id": "engineer"}, {"$inc": {"n": 1}}, return_document=ReturnDocument.AFTER
        )
        assert seq is not None, "the sequence document was inserted above"
        number = int(seq["n"]) - 1
        try:
            await self._numbers.insert_one({"_id": name, "n": number})
        except DuplicateKeyError:  # another writer numbered this name first: its number stands
            doc = await self._numbers.find_one({"_id": name})
            assert doc is not None
            number = int(doc["n"])
        return number


_BY_CLIENT: weakref.WeakKeyDictionary[Any, dict[str, EngineerNumbers]] = weakref.WeakKeyDictionary()


def numbers_for(db: AsyncDatabase[Any]) -> EngineerNumbers:
    """The map of `db`, one per client and database name (it lives as long as the client). Two clients of
    the same address and options compare equal (pymongo), so a map held for an earlier client (a process
    that connected to the same database before, on another event loop) is replaced, not used."""
    per_db = _BY_CLIENT.setdefault(db.client, {})
    held = per_db.get(db.name)
    if held is None or held.client is not db.client:
        held = per_db[db.name] = EngineerNumbers(db)
    return held


def forget(client: Any) -> None:
    """Drops the maps held for `client`: the next `numbers_for` reads the numbers from the database again."""
    _BY_CLIENT.pop(client, None)


def bitmap_from(numbers: Iterable[int]) -> int:
    """A set of numbers as one Python int (bit n set for number n)."""
    bits = 0
    for n in numbers:
        bits |= 1 << n
    return bits


def words_of(bits: int) -> dict[str, Int64]:
    """A bitmap as stored words: word index (a string) → signed 64-bit word, only the words with a bit set."""
    words: dict[str, Int64] = {}
    index = 0
    while bits:
        word = bits & ((1 << WORD) - 1)
        if word:
            words[str(index)] = Int64(word - (1 << WORD) if word >= 1 << (WORD - 1) else word)
        bits >>= WORD
        index += 1
    return words


def bitmap_of(words: Mapping[str, int]) -> int:
    """Stored words back as one bitmap."""
    bits = 0
    for index, word in words.items():
        bits |= (int(word) & ((1 << WORD) - 1)) << (WORD * int(index))
    return bits
