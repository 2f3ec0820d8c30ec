"""GraphiQL served from the app's own copy of its assets, so exploring works on an air-gapped cluster.

Strawberry's GraphiQL page names each asset as `https://unpkg.com/PACKAGE@VERSION/PATH` with a pinned
`integrity="sha384-…"`. `fetch` gets those npm packages with `npm pack PACKAGE@VERSION` (at install or
image-build time: `modelhub fetch-assets`), takes each file out of its tarball and keeps it only when its
SHA-384 equals the pinned one. The app then serves the page with those addresses rewritten to
`/graphiql/assets/…` (the browser checks the same integrity again); when any file is missing it serves the
CDN page and says so in the log.
Nothing third-party is committed: the pins are Strawberry's, and the files live in a git-ignored directory.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from .errors import error_response

log = logging.getLogger("modelhub")

CDN = "https://unpkg.com/"
PREFIX = "/graphiql/assets/"
_ASSET = re.compile(
    r'(?:src|href)="https://unpkg\.com/(?P<package>(?:@[\w.-]+/)?[\w.-]+)@(?P<version>[\w.-]+)/(?P<path>[^"]+)"'
    r'\s+integrity="(?P<integrity>sha384-[A-Za-z0-9+/=]+)"'
)
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}

# What GraphiQL's editor holds when it opens (Strawberry's default shows
# `{ field(arg: "value") { subField } }`, which no modelhub schema answers): an operation that runs as written
# on any server, checked by tests/test_commands_shown.py. Inside a JavaScript template literal: no backquote,
# no "${", no backslash.
DEFAULT_DOCUMENT = """# modelhub: a GraphQL registry for ML model artifacts.
#
# Run the operation below with Ctrl-Enter (or the play button above); the Docs
# pane lists every query, mutation and subscription. Credentials go in the
# Headers tab: {"Authorization": "Bearer <token>"}, or {"X-Engineer-ID": "<name>"}
# on a server in header mode.

query RecentModels {
  models(first: 10) {
    nodes {
      name
      projectName
      latestVersion { version sizeBytes checksumStatus }
      downloadCount
    }
    pageInfo { hasNextPage endCursor }
  }
}
"""
_EXAMPLE = re.compile(r"const EXAMPLE_QUERY = `.*?`;", re.DOTALL)


def with_default_document(html: str, document: str = DEFAULT_DOCUMENT) -> str:
    """Strawberry's GraphiQL page with `document` as what its editor opens with."""
    if "`" in document or "${" in document or "\\" in document:
        raise ValueError("the document must fit in a JavaScript template literal")
    replaced, count = _EXAMPLE.subn(lambda _: f"const EXAMPLE_QUERY = `{document}`;", html)
    if count != 1:  # a Strawberry upgrade changed the page: keep its own default rather than break it
        log.warning("GraphiQL's default document was not replaced (Strawberry's page changed)")
    return replaced


class AssetError(RuntimeError):
    """The assets could not be fetched (no npm, a package that would not download, a file that fails its
    integrity check)."""


@dataclass(frozen=True)
class Asset:
    package: str
    version: str
    path: str
    integrity: str  # "sha384-<base64>", as pinned in the page

    @property
    def local(self) -> str:
        """Its path under the assets directory and after `/graphiql/assets/`."""
        return f"{self.package}@{self.version}/{self.path}"

    def matches(self, data: bytes) -> bool:
        return "sha384-" + base64.b64encode(hashlib.sha384(data).digest()).decode() == self.integrity


def default_dir() -> Path:
    """In the installed package (git-ignored): an image built with `modelhub fetch-assets` carries them."""
    return Path(__file__).resolve().parent.parent / "static" / "vendor"


def pinned(html: str) -> list[Asset]:
    """Every CDN asset the page loads, with its pinned integrity."""
    return [Asset(**m.groupdict()) for m in _ASSET.finditer(html)]


def missing(directory: Path, assets: Iterable[Asset]) -> list[Asset]:
    """The assets that are absent from `directory` or do not match their integrity."""
    out = []
    for asset in assets:
        file = directory / asset.local
        if not file.is_file() or not asset.matches(file.read_bytes()):
            out.append(asset)
    return out


def fetch(directory: Path, assets: list[Asset], npm: str = "npm") -> list[Asset]:
    """Fetches what `directory` lacks with `npm pack` and keeps each file whose SHA-384 matches its pin.
    Returns what it wrote; raises AssetError (and writes nothing for that file) otherwise."""
    todo = missing(directory, assets)
    if not todo:
        return []
    if shutil.which(npm) is None:
        raise AssetError(
            "npm is not installed: GraphiQL's assets cannot be fetched (the page will use the CDN)"
        )
    by_package: dict[str, list[Asset]] = {}
    for asset in todo:
        by_package.setdefault(f"{asset.package}@{asset.version}", []).append(asset)
    with tempfile.TemporaryDirectory() as tmp:
        for spec, wanted in by_package.items():
            done = subprocess.run(
                [npm, "pack", spec, "--json", "--silent", "--pack-destination", tmp],
                capture_output=True,
                text=True,
                timeout=300,
            )
            if done.returncode != 0:
                raise AssetError(f"npm pack {spec} failed: {done.stderr.strip()[-300:]}")
            tarball = Path(tmp) / json.loads(done.stdout)[0]["filename"]
            with tarfile.open(tarball) as tar:
                for asset in wanted:
                    _extract(tar, asset, directory)
    return todo


def _extract(tar: tarfile.TarFile, asset: Asset, directory: Path) -> None:
    member = tar.extractfile(f"package/{asset.path}")
    if member is None:
        raise AssetError(f"{asset.package}@{asset.version} has no {asset.path}")
    data = member.read()
    if not asset.matches(data):
        raise AssetError(f"{asset.local} does not match its pinned integrity {asset.integrity}")
    target = directory / asset.local
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(target.name + ".part")
    staging.write_bytes(data)
    staging.replace(target)


@dataclass(frozen=True)
class GraphiQLPage:
    """The page to serve and the files behind it (`local` is False when it falls back to the CDN)."""

    html: str
    directory: Path
    assets: dict[str, Asset]
    local: bool

    @classmethod
    def build(cls, cdn_html: str, directory: Path) -> GraphiQLPage:
        assets = pinned(cdn_html)
        absent = missing(directory, assets)
        if absent:
            log.warning(
                "GraphiQL loads %d of its %d assets from %s (not found in the assets directory); run "
                "`modelhub fetch-assets` to serve them locally, e.g. on an air-gapped cluster",
                len(absent),
                len(assets),
                CDN,
            )
            return cls(cdn_html, directory, {}, False)
        return cls(cdn_html.replace(CDN, PREFIX), directory, {a.local: a for a in assets}, True)

    async def serve(self, request: Request) -> Response:
        """GET /graphiql/assets/{path}: only the pinned files; versioned paths, so cached for a year."""
        asset = self.assets.get(request.path_params["path"])
        if asset is None:
            return error_response(404, "NOT_FOUND", "no such asset")
        path = self.directory / asset.local
        return FileResponse(
            path,
            media_type=_TYPES.get(path.suffix, "application/octet-stream"),
            headers={"Cache-Control": "public, max-age=31536000, immutable"},
        )
