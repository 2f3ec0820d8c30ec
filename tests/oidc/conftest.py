"""Fixtures of the OIDC tests: the real OpenID provider (node-oidc-provider) on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.oidc.provider import OidcProvider, ensure_installed, node_available

# What the provider's client_credentials client (a CI pipeline) says about itself in its access tokens.
PIPELINE_CLAIMS = {"email": "ci@example.com", "groups": ["vision-team", "unmapped"]}


@pytest.fixture(scope="session")
def oidc_installed() -> None:
    if not node_available():
        pytest.skip("node and npm are not installed (scripts/system-deps.sh installs them)")
    ensure_installed()


@pytest.fixture(scope="module")
def provider(oidc_installed: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    """One provider for a module's tests (they leave its keys as they found them)."""
    with OidcProvider(tmp_path_factory.mktemp("oidc"), client_claims=PIPELINE_CLAIMS) as running:
        yield running


@pytest.fixture
def own_provider(oidc_installed: None, tmp_path: Path) -> Iterator[OidcProvider]:
    """A provider of the test's own (for tests that rotate its keys)."""
    with OidcProvider(tmp_path / "oidc", client_claims=PIPELINE_CLAIMS) as running:
        yield running
