"""The reference analytics page at /ui: static files shipped in the package (no build step) and the
config it starts from (the auth mode, its persisted operations' hashes)."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from .errors import error_response

UI_DIR = Path(__file__).resolve().parent.parent / "ui"
OPERATIONS_FILE = UI_DIR / "operations.graphql"
_FILES = {"ui.js": "text/javascript; charset=utf-8", "ui.css": "text/css; charset=utf-8"}
# The page loads only its own files and calls only this origin's API.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_HEADERS = {"Content-Security-Policy": _CSP, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}


def operations_text() -> str:
    return OPERATIONS_FILE.read_text()


class UiPage:
    def __init__(self, hashes: dict[str, str], auth_mode: str) -> None:
        self.config = {"auth": auth_mode, "operations": hashes}

    async def index(self, request: Request) -> Response:
        return FileResponse(UI_DIR / "index.html", media_type="text/html; charset=utf-8", headers=_HEADERS)

    async def file(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name == "config.json":
            return JSONResponse(self.config, headers={"Cache-Control": "no-store"})
        if name not in _FILES:
            return error_response(404, "NOT_FOUND", "no such file")
        return FileResponse(UI_DIR / name, media_type=_FILES[name], headers=_HEADERS)
