"""A real OpenID provider for the tests: node-oidc-provider (npm) run by tests/oidc/provider.mjs on loopback.

`ensure_installed()` installs the pinned package into tests/oidc/node_modules (git-ignored) with `npm ci`
when it is missing, so a fresh machine with node and npm needs nothing else. The tests generate the
provider's signing keys here (joserfc) and hand it the private JWKS: they can then also sign the tokens
the server must refuse (a wrong issuer or audience, an expired one) with the provider's real keys.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from joserfc.jwk import ECKey, RSAKey

from tests.servers import free_port

HERE = Path(__file__).resolve().parent
AUDIENCE = "urn:modelhub:api"
API_CLIENT = "pipeline"  # a client_credentials client (a service account)
API_SECRET = "pipeline-secret-of-at-least-32-characters"
UI_CLIENT = "modelhub-ui"


def node_available() -> bool:
    return shutil.which("node") is not None and shutil.which("npm") is not None


def ensure_installed() -> None:
    """Installs oidc-provider at its locked version unless it is there already."""
    if (HERE / "node_modules" / "oidc-provider" / "package.json").is_file():
        return
    subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=HERE,
        check=True,
        timeout=600,
    )


def rsa_key() -> RSAKey:
    return RSAKey.generate_key(
        2048, {"kid": "rsa-" + uuid.uuid4().hex[:8], "alg": "RS256", "use": "sig"}, private=True
    )


def ec_key() -> ECKey:
    return ECKey.generate_key(
        "P-256", {"kid": "ec-" + uuid.uuid4().hex[:8], "alg": "ES256", "use": "sig"}, private=True
    )


class OidcProvider:
    """The provider as a context manager: `issuer`, its private `keys`, tokens from its flows, rotation."""

    def __init__(
        self,
        workdir: Path,
        redirect_uris: list[str] | None = None,
        accounts: dict[str, dict[str, Any]] | None = None,
        client_claims: dict[str, Any] | None = None,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.keys: list[RSAKey | ECKey] = [rsa_key(), ec_key()]
        self.keys_file = workdir / "jwks.json"
        self._write_keys()
        clients: list[dict[str, Any]] = [
            {
                "client_id": API_CLIENT,
                "client_secret": API_SECRET,
                "grant_types": ["client_credentials"],
                "redirect_uris": [],
                "response_types": [],
            }
        ]
        if redirect_uris:
            clients.append(
                {
                    "client_id": UI_CLIENT,
                    "token_endpoint_auth_method": "none",
                    "grant_types": ["authorization_code"],
                    "response_types": ["code"],
                    "redirect_uris": redirect_uris,
                }
            )
        self.config_file = workdir / "provider.json"
        self.config_file.write_text(
            json.dumps(
                {
                    "port": self.port,
                    "audience": AUDIENCE,
                    "keysFile": str(self.keys_file),
                    "clients": clients,
                    "accounts": accounts or {},
                    "clientClaims": {API_CLIENT: client_claims or {}},
                }
            )
        )
        self.process: subprocess.Popen[bytes] | None = None

    def _write_keys(self) -> None:
        self.keys_file.write_text(json.dumps({"keys": [k.as_dict(private=True) for k in self.keys]}))

    @property
    def rsa(self) -> RSAKey:
        return next(k for k in self.keys if isinstance(k, RSAKey))

    @property
    def ec(self) -> ECKey:
        return next(k for k in self.keys if isinstance(k, ECKey))

    def __enter__(self) -> OidcProvider:
        ensure_installed()
        self.log = (self.workdir / "provider.log").open("wb")
        self.process = subprocess.Popen(
            ["node", str(HERE / "provider.mjs"), str(self.config_file)],
            cwd=HERE,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(self.issuer + "/.well-known/openid-configuration", timeout=2).raise_for_status()
                return self
            except httpx.HTTPError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.__exit__()
                    raise RuntimeError(f"the OpenID provider did not start: {self.log_text()}") from None
                time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
        self.log.close()

    def log_text(self) -> str:
        return (self.workdir / "provider.log").read_text(errors="replace")[-2000:]

    def client_credentials(self) -> str:
        """An access token (a JWT for the API's audience) from the token endpoint's client_credentials grant."""
        response = httpx.post(
            self.issuer + "/token",
            data={"grant_type": "client_credentials", "resource": AUDIENCE, "scope": "api"},
            auth=(API_CLIENT, API_SECRET),
            timeout=10,
        )
        response.raise_for_status()
        return str(response.json()["access_token"])

    def sign_with(self, alg: str) -> None:
        """The algorithm the provider signs access tokens with from now on (RS256 or ES256)."""
        httpx.post(f"{self.issuer}/test/alg?{alg}", timeout=10).raise_for_status()

    def rotate(self) -> RSAKey:
        """A new RSA key first in the provider's JWKS (it signs from now on); the old one stays published."""
        new = rsa_key()
        self.keys.insert(0, new)
        self._write_keys()
        httpx.post(self.issuer + "/test/rotate", timeout=10).raise_for_status()
        return new

    def jwks_hits(self) -> int:
        return int(httpx.get(self.issuer + "/test/stats", timeout=10).json()["jwksHits"])
