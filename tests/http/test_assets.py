"""GraphiQL's assets: pins read off the page, fetched with `npm pack` only when their SHA-384 matches, served
by the app with the page rewritten, and the CDN page (with a log line) when they are missing."""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import os
import stat
import tarfile
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route
from strawberry.http.ides import get_graphql_ide_html

from graphql_api.http import assets

JS = b"console.log('graphiql');\n"
CSS = b"body { color: black }\n"


def sri(data: bytes) -> str:
    return "sha384-" + base64.b64encode(hashlib.sha384(data).digest()).decode()


def page(js: bytes = JS, css: bytes = CSS) -> str:
    return (
        f'<script src="https://unpkg.com/demo-lib@1.2.3/dist/lib.min.js" integrity="{sri(js)}"></script>\n'
        f'<link href="https://unpkg.com/@scope/style@0.1.0/style.css" integrity="{sri(css)}" />'
    )


def fake_npm(tmp_path: Path, files: dict[str, dict[str, bytes]]) -> str:
    """An `npm` that packs the given files for each spec (the registry is not reachable from tests)."""
    store = tmp_path / "registry"
    for spec, members in files.items():
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for name, data in members.items():
                info = tarfile.TarInfo(f"package/{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        target = store / (spec.replace("/", "_") + ".tgz")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(buf.getvalue())
    script = tmp_path / "npm"
    script.write_text(
        "#!/usr/bin/env python3\n"
        "import json, shutil, sys\n"
        f"store = {str(store)!r}\n"
        "spec = sys.argv[2]; dest = sys.argv[sys.argv.index('--pack-destination') + 1]\n"
        "name = spec.replace('/', '_') + '.tgz'\n"
        "shutil.copy(f'{store}/{name}', f'{dest}/{name}')\n"
        "print(json.dumps([{'filename': name}]))\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def test_pins_are_read_off_strawberrys_page() -> None:
    """The real GraphiQL page names 7 CDN assets, each with a package, a version and a SHA-384 pin."""
    pins = assets.pinned(get_graphql_ide_html(graphql_ide="graphiql"))
    assert len(pins) == 7
    assert {p.package for p in pins} >= {"react", "react-dom", "graphiql", "@graphiql/plugin-explorer"}
    assert all(p.integrity.startswith("sha384-") and p.version[0].isdigit() for p in pins)


@pytest.mark.process
def test_fetch_keeps_only_files_matching_their_pins(tmp_path: Path) -> None:
    """Good files are written under PACKAGE@VERSION/PATH; a tampered one raises and is not written; a second
    fetch has nothing to do."""
    pins = assets.pinned(page())
    good = {"demo-lib@1.2.3": {"dist/lib.min.js": JS}, "@scope/style@0.1.0": {"style.css": CSS}}
    out = tmp_path / "vendor"
    wrote = assets.fetch(out, pins, npm=fake_npm(tmp_path / "a", good))
    assert {a.local for a in wrote} == {"demo-lib@1.2.3/dist/lib.min.js", "@scope/style@0.1.0/style.css"}
    assert (out / "demo-lib@1.2.3/dist/lib.min.js").read_bytes() == JS
    assert assets.fetch(out, pins, npm="/nonexistent/npm") == []

    tampered = {**good, "demo-lib@1.2.3": {"dist/lib.min.js": JS + b"alert(1)"}}
    elsewhere = tmp_path / "other"
    with pytest.raises(assets.AssetError, match="integrity"):
        assets.fetch(elsewhere, pins, npm=fake_npm(tmp_path / "b", tampered))
    assert not (elsewhere / "demo-lib@1.2.3/dist/lib.min.js").exists()


def test_fetch_without_npm_says_so(tmp_path: Path) -> None:
    """With no npm on the machine the error says the page will use the CDN."""
    with pytest.raises(assets.AssetError, match="npm is not installed"):
        assets.fetch(tmp_path, assets.pinned(page()), npm="/nonexistent/npm")


async def test_the_page_is_served_locally_when_the_files_are_there(tmp_path: Path) -> None:
    """All files present: the page points at /graphiql/assets/, which serves exactly the pinned files with a
    year-long cache and the right type, and 404s anything else (no path tricks)."""
    for local, data in (("demo-lib@1.2.3/dist/lib.min.js", JS), ("@scope/style@0.1.0/style.css", CSS)):
        (tmp_path / local).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / local).write_bytes(data)
    served = assets.GraphiQLPage.build(page(), tmp_path)
    assert served.local and "unpkg.com" not in served.html and assets.PREFIX in served.html
    app = Starlette(routes=[Route(assets.PREFIX + "{path:path}", served.serve)])
    (tmp_path / "secret.txt").write_text("no")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        resp = await http.get(assets.PREFIX + "demo-lib@1.2.3/dist/lib.min.js")
        assert resp.content == JS and resp.headers["content-type"].startswith("text/javascript")
        assert "immutable" in resp.headers["cache-control"]
        assert (await http.get(assets.PREFIX + "@scope/style@0.1.0/style.css")).content == CSS
        for path in ("secret.txt", "../secret.txt", "demo-lib@1.2.3/../../secret.txt"):
            assert (await http.get(assets.PREFIX + path)).status_code == 404


def test_missing_files_fall_back_to_the_cdn_and_log_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One file missing (or altered): the CDN page, unchanged, and a warning naming `modelhub fetch-assets`."""
    (tmp_path / "demo-lib@1.2.3/dist").mkdir(parents=True)
    (tmp_path / "demo-lib@1.2.3/dist/lib.min.js").write_bytes(JS + b" ")
    with caplog.at_level(logging.WARNING, logger="modelhub"):
        served = assets.GraphiQLPage.build(page(), tmp_path)
    assert not served.local and served.html == page()
    assert "modelhub fetch-assets" in caplog.text and "2 of its 2" in caplog.text
    assert os.fspath(tmp_path) not in served.html
