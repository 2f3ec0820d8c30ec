"""The SDK's API reference: `make docs` (pdoc, offline) builds it from graphql_api.client, and every public
class, function and method is in it with its own docstring; the package says it is typed (py.typed)."""

from __future__ import annotations

import dataclasses
import html
import inspect
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from graphql_api import client

ROOT = Path(__file__).resolve().parent.parent


class _Text(HTMLParser):
    """The visible text of a page, and the ids of its elements."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.ids: set[str] = set()
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.ids |= {v for k, v in attrs if k == "id" and v}
        self._skip += tag in ("script", "style")

    def handle_endtag(self, tag: str) -> None:
        self._skip -= tag in ("script", "style")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def _plain(text: str) -> str:
    """Docstring or page text as compared: markdown's backticks dropped, whitespace collapsed."""
    return " ".join(html.unescape(text).replace("`", "").split())


def _public() -> dict[str, Any]:
    """Qualified name -> object of everything the reference must show: the names of `client.__all__`, and
    the public methods, class methods and properties each class of them defines itself."""
    found: dict[str, Any] = {}
    for name in client.__all__:
        obj = getattr(client, name)
        found[name] = obj
        if inspect.isclass(obj):
            for attr, value in vars(obj).items():
                if attr.startswith("_") or attr == "list":  # `list` is `models` under a second name
                    continue
                if isinstance(value, classmethod | staticmethod):
                    value = value.__func__
                if inspect.isfunction(value) or isinstance(value, property):
                    found[f"{name}.{attr}"] = value
    return found


def _docstring(obj: Any) -> str:
    doc = obj.__doc__ if not isinstance(obj, property) else obj.fget.__doc__
    return inspect.cleandoc(doc or "")


def test_every_public_name_has_its_own_docstring() -> None:
    """No public class, function or method of the SDK lacks a docstring (a dataclass's generated signature
    does not count), and its results are frozen dataclasses."""
    for qualname, obj in _public().items():
        doc = _docstring(obj)
        generated = inspect.isclass(obj) and doc.startswith(f"{obj.__name__}(")
        assert doc and not generated, f"{qualname} has no docstring"
    for name in ("ModelVersion", "Model", "DownloadTicket", "DownloadResult", "StatsRow", "Page"):
        cls = getattr(client, name)
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen, name  # type: ignore[attr-defined]
    assert (ROOT / "graphql_api" / "py.typed").exists()


@pytest.mark.process
def test_reference_builds_offline_with_every_docstring(tmp_path: Path) -> None:
    """`pdoc graphql_api.client` (what `make docs` runs) builds a page holding every public name with its
    docstring, and the page loads nothing from the network."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_PROXY": "*", "http_proxy": "http://127.0.0.1:9"}
    done = subprocess.run(
        [sys.executable, "-m", "pdoc", "graphql_api.client", "-o", str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Warn" not in done.stderr, done.stderr  # e.g. an annotation it could not resolve
    page = (tmp_path / "graphql_api" / "client.html").read_text()
    parser = _Text()
    parser.feed(page)
    text = _plain("".join(parser.parts))
    for qualname, obj in _public().items():
        assert qualname in parser.ids, f"{qualname} is not in the reference"
        first_paragraph = _plain(_docstring(obj).split("\n\n")[0])
        assert first_paragraph in text, f"{qualname}'s docstring is not in the reference: {first_paragraph}"
    assert not re.search(r"""<(script|link|img)[^>]+(src|href)=["']https?:""", page)
