"""MODELHUB_AUTH=oidc against a real OpenID provider (node-oidc-provider on loopback): its tokens sign in
(principal and grants from their claims), `mh_` tokens keep working, key rotation refetches the JWKS at
most once per window, and every forged or misdirected token is refused with UNAUTHENTICATED."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jws, jwt
from joserfc.jwk import RSAKey
from joserfc.util import urlsafe_b64encode
from starlette.applications import Starlette

from graphql_api.app import create_app
from graphql_api.auth import create_token
from graphql_api.config import Settings
from graphql_api.roles import Role
from tests.oidc.provider import AUDIENCE, OidcProvider, rsa_key
from tests.servers import GraphQLClient, LiveServer, free_port, make_settings

GRANTS = {"vision-team": {"vision": "ENGINEER"}, "auditors": {"*": "READER"}}
REGISTER = """mutation($n: String!, $p: String!) {
  registerModel(input: {name: $n, projectName: $p, bucket: "models", key: "m.bin"}) {
    __typename ... on ModelVersion { model { owner } }
  }
}"""
MODELS = "{ models(first: 1) { totalCount } }"


def oidc_settings(mongo_uri: str, data: Path, issuer: str, **extra: Any) -> Settings:
    settings = make_settings(
        "local",
        mongo_uri,
        None,
        data,
        auth="oidc",
        oidc_issuer=issuer,
        oidc_audience=AUDIENCE,
        oidc_group_grants=GRANTS,
        **extra,
    )
    model = settings.objects_dir / "models" / "m.bin"
    model.parent.mkdir(parents=True, exist_ok=True)
    model.write_bytes(b"weights" * 100)
    return settings


@pytest.fixture
async def app(provider: OidcProvider, mongo_uri: str, tmp_path: Path) -> AsyncIterator[Starlette]:
    application = create_app(oidc_settings(mongo_uri, tmp_path / "data", provider.issuer))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def gql(app: Starlette) -> AsyncIterator[GraphQLClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=30) as http:
        yield GraphQLClient(http)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def error_code(body: dict[str, Any]) -> str:
    assert body.get("errors"), body
    return str(body["errors"][0]["extensions"]["code"])


def claims(provider: OidcProvider, **override: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"iss": provider.issuer, "aud": AUDIENCE, "sub": "mallory", "email": "mallory@example.com",
            "groups": ["auditors"], "iat": now, "exp": now + 600}  # fmt: skip
    base.update(override)
    return {k: v for k, v in base.items() if v is not None}


def header_of(token: str) -> dict[str, Any]:
    return dict(jws.extract_compact(token.encode()).protected)


def signed(key: RSAKey, body: dict[str, Any], kid: str | None = None) -> str:
    """A JWT signed with `key` (the provider's own, where the test says so) by joserfc."""
    return jwt.encode({"alg": "RS256", "kid": kid or key.kid}, body, key)


async def test_a_provider_token_signs_in_with_its_claims_and_group_grants(
    provider: OidcProvider, gql: GraphQLClient
) -> None:
    """An access token from the provider's client_credentials grant authenticates a GraphQL request as its
    `email` claim, and its groups give ENGINEER on `vision` only (FORBIDDEN elsewhere)."""
    token = provider.client_credentials()
    made = await gql(REGISTER, {"n": "detector", "p": "vision"}, **bearer(token))
    assert made["registerModel"]["model"]["owner"] == "ci@example.com"
    refused = await gql.raw(REGISTER, {"n": "parser", "p": "nlp"}, **bearer(token))
    assert error_code(refused) == "FORBIDDEN"


async def test_api_tokens_keep_working_beside_oidc(gql: GraphQLClient) -> None:
    """With MODELHUB_AUTH=oidc an `mh_` API token still authenticates (and so does a provisioned one with
    dots in it, which is no JWT), and a wrong one is still refused."""
    value, _ = await create_token("ci", "bob", Role.ADMIN, "test")
    made = await gql(REGISTER, {"n": "ranker", "p": "search"}, **bearer(value))
    assert made["registerModel"]["model"]["owner"] == "bob"
    dotted, _ = await create_token(
        "dotted", "carol", Role.READER, "test", token="provisioned.token.of-32-chars-or-more"
    )
    assert (await gql(MODELS, **bearer(dotted)))["models"]["totalCount"] == 1
    assert error_code(await gql.raw(MODELS, **bearer("mh_" + "x" * 43))) == "UNAUTHENTICATED"


async def test_es256_tokens_are_accepted(provider: OidcProvider, gql: GraphQLClient) -> None:
    """A token the provider signs with its P-256 key (ES256) authenticates like an RS256 one."""
    provider.sign_with("ES256")
    try:
        token = provider.client_credentials()
    finally:
        provider.sign_with("RS256")
    assert header_of(token)["alg"] == "ES256"
    made = await gql(REGISTER, {"n": "segmenter", "p": "vision"}, **bearer(token))
    assert made["registerModel"]["model"]["owner"] == "ci@example.com"


def _none_token(provider: OidcProvider) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # joserfc warns that "none" is deprecated: that is the point
        return jwt.encode({"alg": "none"}, claims(provider), None, algorithms=["none"])


def _hs256_with_public_key(provider: OidcProvider) -> str:
    # The classic key-confusion forgery: HMAC keyed with the issuer's published public key (PEM). joserfc
    # rightly refuses to use a public key as an HMAC secret, so the test signs with hmac directly.
    header = urlsafe_b64encode(json.dumps({"alg": "HS256", "kid": provider.rsa.kid}).encode())
    payload = urlsafe_b64encode(json.dumps(claims(provider)).encode())
    signing_input = header + b"." + payload
    secret = provider.rsa.as_pem(private=False)
    signature = urlsafe_b64encode(hmac.new(secret, signing_input, hashlib.sha256).digest())
    return (signing_input + b"." + signature).decode()


FORGERIES = {
    "alg none": _none_token,
    "HS256 keyed with the public key": _hs256_with_public_key,
    "wrong issuer": lambda p: signed(p.rsa, claims(p, iss="https://evil.example.com")),
    "wrong audience": lambda p: signed(p.rsa, claims(p, aud="urn:another:api")),
    "expired": lambda p: signed(p.rsa, claims(p, exp=int(time.time()) - 120)),
    "no exp": lambda p: signed(p.rsa, claims(p, exp=None)),
    "not yet valid": lambda p: signed(p.rsa, claims(p, nbf=int(time.time()) + 600)),
    "signed by another key under the provider's kid": lambda p: signed(rsa_key(), claims(p), kid=p.rsa.kid),
    "unverified email": lambda p: signed(p.rsa, claims(p, email_verified=False)),
    "garbage": lambda p: "a.b.c",
}


@pytest.mark.parametrize("forgery", list(FORGERIES))
async def test_forged_and_misdirected_tokens_are_refused(
    provider: OidcProvider, gql: GraphQLClient, forgery: str
) -> None:
    """Each forged, misdirected or expired token is refused with UNAUTHENTICATED (not run as anonymous)."""
    token = FORGERIES[forgery](provider)
    assert error_code(await gql.raw(MODELS, **bearer(token))) == "UNAUTHENTICATED"


async def test_clock_skew_within_the_leeway_is_allowed(provider: OidcProvider, gql: GraphQLClient) -> None:
    """A token signed with the provider's key that expired 10 s ago (leeway 30 s) is still accepted; the
    same token 120 s past expiry is not (the expired case above)."""
    token = signed(provider.rsa, claims(provider, exp=int(time.time()) - 10))
    assert (await gql(MODELS, **bearer(token)))["models"]["totalCount"] == 0


async def test_key_rotation_refetches_the_jwks_at_most_once_per_window(
    own_provider: OidcProvider, mongo_uri: str, tmp_path: Path
) -> None:
    """After the provider rotates its signing key, a token with the new kid is accepted after one JWKS
    refetch; a second rotation within the refetch window is not fetched (its tokens are refused, old ones
    still pass) until the window has passed."""
    window = 5.0
    settings = oidc_settings(
        mongo_uri, tmp_path / "data", own_provider.issuer, oidc_jwks_refetch_seconds=window
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=30) as http:
            gql = GraphQLClient(http)
            first = own_provider.client_credentials()
            await gql(MODELS, **bearer(first))
            assert own_provider.jwks_hits() == 1
            await gql(MODELS, **bearer(first))
            assert own_provider.jwks_hits() == 1  # cached

            await asyncio.sleep(window)  # the first fetch's window is over
            second_key = own_provider.rotate()
            second = own_provider.client_credentials()
            assert header_of(second)["kid"] == second_key.kid
            await gql(MODELS, **bearer(second))
            refetched_at = time.monotonic()
            assert own_provider.jwks_hits() == 2

            third_key = own_provider.rotate()
            third = own_provider.client_credentials()
            assert header_of(third)["kid"] == third_key.kid
            for _ in range(5):  # an unknown kid, again and again: no fetch within the window
                assert error_code(await gql.raw(MODELS, **bearer(third))) == "UNAUTHENTICATED"
            assert time.monotonic() - refetched_at < window, "the machine was too slow to test the window"
            assert own_provider.jwks_hits() == 2
            await gql(MODELS, **bearer(second))  # known keys keep working meanwhile

            await asyncio.sleep(window - (time.monotonic() - refetched_at) + 0.2)
            await gql(MODELS, **bearer(third))
            assert own_provider.jwks_hits() == 3


async def test_an_unreachable_provider_refuses_its_tokens_and_not_api_tokens(
    provider: OidcProvider, mongo_uri: str, tmp_path: Path
) -> None:
    """With the issuer down, JWTs are refused with UNAUTHENTICATED (not an internal error), `mh_` tokens still
    work, and /ui offers no sign-in (its config names no provider)."""
    dead = f"http://127.0.0.1:{free_port()}"
    settings = oidc_settings(mongo_uri, tmp_path / "data", dead, oidc_client_id="modelhub-ui")
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=30) as http:
            gql = GraphQLClient(http)
            token = signed(provider.rsa, claims(provider, iss=dead))
            for _ in range(3):
                assert error_code(await gql.raw(MODELS, **bearer(token))) == "UNAUTHENTICATED"
            value, _ = await create_token("ci", "bob", Role.READER, "test")
            assert (await gql(MODELS, **bearer(value)))["models"]["totalCount"] == 0
            config = (await http.get("/ui/config.json")).json()
            assert config["auth"] == "oidc" and config["oidc"] is None


async def test_ui_config_names_the_provider_and_the_csp_only_its_origin(
    provider: OidcProvider, mongo_uri: str, tmp_path: Path
) -> None:
    """With a client id configured, /ui/config.json gives the page the provider's endpoints (from its
    discovery document) and /ui's CSP lets the page call this origin and the token endpoint's only."""
    settings = oidc_settings(mongo_uri, tmp_path / "data", provider.issuer, oidc_client_id="modelhub-ui")
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=30) as http:
            oidc = (await http.get("/ui/config.json")).json()["oidc"]
            assert oidc["clientId"] == "modelhub-ui" and oidc["audience"] == AUDIENCE
            assert oidc["authorizationEndpoint"] == provider.issuer + "/auth"
            assert oidc["tokenEndpoint"] == provider.issuer + "/token"
            csp = (await http.get("/ui")).headers["content-security-policy"]
            assert f"connect-src 'self' {provider.issuer};" in csp
            assert "form-action 'none'" in csp and "script-src 'self';" in csp


async def test_a_jwt_signs_in_a_websocket_which_closes_when_it_expires(
    provider: OidcProvider, mongo_uri: str, tmp_path: Path
) -> None:
    """A JWT in `connection_init` authenticates a socket's operations; the socket, running only a
    subscription, is closed with 4401 once the JWT has expired past the leeway."""
    from tests.http.test_websocket import FEED, Socket

    settings = oidc_settings(mongo_uri, tmp_path / "data", provider.issuer, oidc_leeway_seconds=0)
    token = signed(provider.rsa, claims(provider, exp=int(time.time()) + 4))
    with LiveServer(settings) as server:
        async with Socket(server.url, bearer(token)) as sock:
            answer = await sock.run(MODELS)
            assert answer["type"] == "next" and answer["payload"]["data"]["models"]["totalCount"] == 0
            await sock.send("feed", {"query": FEED})
            assert await sock.closed(20) == 4401
