"""The reference analytics page at /ui: static files shipped in the package (no build step) and the
config it starts from (the auth mode, its persisted operations' hashes, where to sign in with OIDC)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from ..errors import Unauthenticated
from .caller import services_of
from .errors import error_response

UI_DIR = Path(__file__).resolve().parent.parent / "ui"
OPERATIONS_FILE = UI_DIR / "operations.graphql"
_FILES = {"ui.js": "text/javascript; charset=utf-8", "ui.css": "text/css; charset=utf-8"}


def _csp(token_origins: tuple[str, ...] = ()) -> str:
    """The page loads only its own files and calls only this origin's API and, with OIDC sign-in, the
    issuer's token endpoint (the sign-in itself is a top-level navigation, which CSP does not restrict)."""
    connect = " ".join(("'self'", *token_origins))
    return (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        f"connect-src {connect}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


def _headers(token_origins: tuple[str, ...] = ()) -> dict[str, str]:
    return {"Content-Security-Policy": _csp(token_origins), "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff"}  # fmt: skip


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def operations_text() -> str:
    return OPERATIONS_FILE.read_text()


@dataclass(frozen=True)
class SignIn:
    """The public OIDC client the page signs in as (authorization-code flow with PKCE, no secret)."""

    client_id: str
    scope: str
    audience: str


class UiPage:
    def __init__(self, hashes: dict[str, str], auth_mode: str, sign_in: SignIn | None = None) -> None:
        self.config = {"auth": auth_mode, "operations": hashes}
        self.sign_in = sign_in

    async def _oidc(self, request: Request) -> dict[str, Any] | None:
        """Where the page signs in (from the issuer's discovery document), or None without OIDC sign-in
        or while the issuer cannot be reached (the page then offers API tokens only)."""
        verifier = services_of(request).auth.oidc
        if self.sign_in is None or verifier is None:
            return None
        try:
            endpoints = await verifier.endpoints()
        except Unauthenticated:
            return None
        return {
            "issuer": verifier.issuer,
            "clientId": self.sign_in.client_id,
            "scope": self.sign_in.scope,
            "audience": self.sign_in.audience,
            "authorizationEndpoint": endpoints.authorization_endpoint,
            "tokenEndpoint": endpoints.token_endpoint,
        }

    async def index(self, request: Request) -> Response:
        oidc = await self._oidc(request)
        origins = (_origin(oidc["tokenEndpoint"]),) if oidc else ()
        return FileResponse(
            UI_DIR / "index.html", media_type="text/html; charset=utf-8", headers=_headers(origins)
        )

    async def file(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name == "config.json":
            config = {**self.config, "oidc": await self._oidc(request)}
            return JSONResponse(config, headers={"Cache-Control": "no-store"})
        if name not in _FILES:
            return error_response(404, "NOT_FOUND", "no such file")
        return FileResponse(UI_DIR / name, media_type=_FILES[name], headers=_headers())
