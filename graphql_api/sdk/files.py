"""Files on the client's side: hashing, the slices an upload sends, and a download's `.part` file and sink."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from .types import DownloadTicket

CHUNK = 1024 * 1024
Progress = Callable[[int, int], None]  # (bytes done, bytes in all)


def hash_file(path: Path, length: int | None = None) -> Any:
    """A running SHA-256 of the first `length` bytes of a file (all of it by default)."""
    digest = hashlib.sha256()
    left = path.stat().st_size if length is None else length
    with path.open("rb") as fh:
        while left > 0 and (block := fh.read(min(CHUNK, left))):
            digest.update(block)
            left -= len(block)
    return digest


def file_digest(path: Path) -> tuple[int, str]:
    """(size, sha256) of a file, read in chunks."""
    return path.stat().st_size, hash_file(path).hexdigest()


def file_slices(path: Path, start: int, length: int, sent: Callable[[int], None]) -> Iterator[bytes]:
    with path.open("rb") as fh:
        fh.seek(start)
        left = length
        while left > 0:
            block = fh.read(min(CHUNK, left))
            if not block:
                return
            left -= len(block)
            sent(len(block))
            yield block


class Partial:
    """The `.part` file of a download and what it came from (`.part.json`)."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self.part = dest.with_name(dest.name + ".part")
        self.meta = dest.with_name(dest.name + ".part.json")

    def resumable(self, name: str, version: int | None) -> tuple[int, dict[str, Any]]:
        """How many bytes of the same model (and version, when known) are already here, and their record;
        a part file without a record of the same model is not trusted and is dropped."""
        if not self.part.exists():
            return 0, {}
        try:
            meta = json.loads(self.meta.read_text())
        except (OSError, ValueError):
            meta = {}
        if meta.get("name") != name or (version is not None and meta.get("version") != version):
            self.discard()
            return 0, {}
        return self.part.stat().st_size, meta

    def record(self, name: str, ticket: DownloadTicket) -> None:
        meta = {"name": name, "version": ticket.version, "etag": ticket.etag, "download": ticket.download_id}
        self.meta.write_text(json.dumps(meta))

    def discard(self) -> None:
        self.part.unlink(missing_ok=True)
        self.meta.unlink(missing_ok=True)


@dataclass
class Sink:
    """Writes a download's body after the `have` bytes already in the part file (or from byte 0 when the
    server sent the whole object), hashing as it writes: the file is never read back."""

    partial: Partial
    have: int
    size: int
    digest: Any  # the running SHA-256 of the first `have` bytes
    progress: Progress | None
    offset: int = 0
    written: int = 0
    fh: BinaryIO | None = field(default=None, repr=False)

    def start(self, status: int) -> None:
        self.offset = self.have if status == 206 else 0  # 200: If-Range found the object changed
        if self.offset == 0:
            self.digest = hashlib.sha256()
        self.fh = self.partial.part.open("r+b" if self.offset else "wb")
        self.fh.seek(self.offset)
        self.fh.truncate()

    def write(self, chunk: bytes) -> None:
        assert self.fh is not None
        self.fh.write(chunk)
        self.digest.update(chunk)
        self.written += len(chunk)
        if self.progress:
            self.progress(self.offset + self.written, self.size)

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
